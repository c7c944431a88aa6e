"""A deterministic generator of realistic synthetic cohorts, written through the records service.

Nothing here is real patient data. Subjects follow the published shape of the three studies in
DESIGN.md — women of about 33 ± 7 years, about two thirds IGM, lesions that shrink over visits,
complete response mostly within 1–6 months, some relapses, dropouts, missed and late visits — and a
few deliberately invalid entries that the validator must refuse. Because every value goes through
:mod:`ductal.records`, the cohort is validated and audited exactly like real data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from ductal import forms, randomisation, records
from ductal.errors import ValidationError
from ductal.models import Site, Subject
from ductal.protocols.model import Protocol
from ductal.vault import Vault

ACTOR = "synthetic"


@dataclass(frozen=True)
class ArmTruth:
    """How a synthetic arm behaves: chance of complete response and its typical timing."""

    cr_probability: float
    median_months_to_cr: float
    relapse_probability: float
    progression_probability: float


# True behaviour per protocol and arm, chosen to resemble the published results in DESIGN.md.
TRUTH: dict[str, dict[str, ArmTruth]] = {
    "lavage-observational": {"lavage": ArmTruth(0.93, 2.5, 0.10, 0.03)},
    "lavage-vs-steroid-ni": {
        "lavage": ArmTruth(0.86, 2.5, 0.12, 0.05),
        "steroid": ArmTruth(0.87, 4.0, 0.20, 0.05),
    },
    "refractory-igm-adaptive": {
        "a_supportive": ArmTruth(0.02, 8.0, 0.30, 0.70),
        "b_prednisolone": ArmTruth(0.12, 5.0, 0.30, 0.70),
        "c_methotrexate": ArmTruth(0.94, 3.5, 0.08, 0.02),
    },
}

ACCRUAL_START: dict[str, dt.date] = {
    "lavage-observational": dt.date(2016, 7, 1),
    "lavage-vs-steroid-ni": dt.date(2018, 11, 1),
    "refractory-igm-adaptive": dt.date(2017, 3, 1),
}

_GIVEN = ("Li", "Mei", "Xiu", "Hua", "Yan", "Ling", "Fang", "Sara", "Maryam", "Zahra", "Leila")
_FAMILY = ("Chen", "Wang", "Zhang", "Liu", "Huang", "Zhou", "Ahmadi", "Karimi", "Rahimi", "Wu")

MONTH_DAYS = 30.4375


@dataclass
class CohortSummary:
    """What :func:`generate_cohort` wrote."""

    protocol_id: str
    screened: int = 0
    ineligible: int = 0
    enrolled: int = 0
    forms_saved: int = 0
    rejected_entries: int = 0
    rejected_examples: list[str] = field(default_factory=list)
    lost_to_follow_up: int = 0
    withdrawn: int = 0
    study_ids: list[str] = field(default_factory=list)


def _pick(
    rng: np.random.Generator, options: Sequence[str], p: Sequence[float] | None = None
) -> str:
    return str(options[int(rng.choice(len(options), p=p))])


def _yes(rng: np.random.Generator, p: float) -> int:
    return int(rng.random() < p)


def _iso(day: dt.date) -> str:
    return day.isoformat()


class _Writer:
    """Saves forms for one subject, counting saves and refused invalid entries."""

    def __init__(
        self, session: Session, subject: Subject, summary: CohortSummary, vault: Vault | None
    ) -> None:
        self.session = session
        self.subject = subject
        self.summary = summary
        self.vault = vault

    def save(self, form_key: str, data: dict[str, Any], **kwargs: Any) -> None:
        forms.save_form(
            self.session,
            subject=self.subject,
            form_key=form_key,
            data=data,
            actor=ACTOR,
            vault=self.vault,
            **kwargs,
        )
        self.summary.forms_saved += 1

    def try_invalid(self, form_key: str, data: dict[str, Any], **kwargs: Any) -> None:
        """Attempt an entry that must be refused; the refusal is counted, never stored."""
        nested = self.session.begin_nested()
        try:
            self.save(form_key, data, **kwargs)
        except ValidationError as exc:
            nested.rollback()
            self.summary.rejected_entries += 1
            if len(self.summary.rejected_examples) < 5:
                first = exc.problems[0] if exc.problems else exc.message
                self.summary.rejected_examples.append(
                    f"{self.subject.study_id} {form_key}: {first}"
                )
            return
        nested.rollback()
        raise AssertionError(f"the validator accepted an invalid {form_key} entry: {data}")


def _screening(
    rng: np.random.Generator, protocol: Protocol, screened_on: dt.date
) -> tuple[dict[str, Any], int]:
    age = int(np.clip(round(rng.normal(33.5, 6.8)), 17, 65))
    field_keys = {f.key for f in protocol.form(protocol.screening_form).fields}
    diagnosis = "igm" if protocol.id != "lavage-observational" or rng.random() < 0.67 else "pd"
    data: dict[str, Any] = {
        "screening_date": _iso(screened_on),
        "age": age,
        "sex": "female",
        "non_lactating_6m": _yes(rng, 0.96),
        "pathology_confirmed": 1,
        "diagnosis": diagnosis,
        "carcinoma_excluded": _yes(rng, 0.98),
        "consent_signed": _yes(rng, 0.97),
    }
    if data["consent_signed"]:
        data["consent_date"] = _iso(screened_on)
    severity = int(np.clip(round(rng.normal(5.5, 2.2)), 0, 12))
    if "severity_score" in field_keys:
        data["severity_score"] = severity
    if "severity_group" in field_keys:
        data["severity_group"] = "severe" if severity >= 6 else "mild"
    if "refractory_or_recurrent" in field_keys:
        data["refractory_or_recurrent"] = _yes(rng, 0.97)
    return data, severity


def _identity(rng: np.random.Generator, age: int, screened_on: dt.date) -> dict[str, Any]:
    born = screened_on - dt.timedelta(days=int(age * 365.25 + rng.integers(1, 360)))
    return {
        "name": f"{_pick(rng, _FAMILY)} {_pick(rng, _GIVEN)} (synthetic)",
        "hospital_record_number": f"SYN{int(rng.integers(10**6, 10**7))}",
        "phone": f"+00 555 {int(rng.integers(1000, 9999))} {int(rng.integers(1000, 9999))}",
        "date_of_birth": born.isoformat(),
    }


def _baseline(
    rng: np.random.Generator, assessed_on: dt.date, severity: int, diagnosis: str
) -> tuple[dict[str, Any], float, int]:
    size1 = float(np.clip(rng.lognormal(np.log(38), 0.45), 8, 160))
    size2 = float(np.clip(size1 * rng.uniform(0.5, 0.9), 5, 150))
    size3 = float(np.clip(size2 * rng.uniform(0.4, 0.9), 3, 120))
    culture = _pick(rng, ("not_done", "negative", "positive"), (0.15, 0.55, 0.30))
    infection = int(culture == "positive" or rng.random() < 0.08)
    presentation = ["mass"]
    for code, p in (("abscess", 0.45), ("fistula", 0.15), ("skin", 0.5), ("pain", 0.8)):
        if rng.random() < p:
            presentation.append(code)
    if rng.random() < 0.12:
        presentation.append("erythema_nodosum")
    if rng.random() < 0.05:
        presentation.append("arthritis")
    height = round(float(rng.normal(160, 5.5)), 1)
    weight = round(float(np.clip(rng.normal(62, 9), 40, 110)), 1)
    data: dict[str, Any] = {
        "assessment_date": _iso(assessed_on),
        "height_cm": height,
        "weight_kg": weight,
        "parity": int(rng.choice([0, 1, 2, 3], p=[0.1, 0.45, 0.35, 0.1])),
        "months_since_last_lactation": int(rng.integers(6, 96)),
        "oral_contraceptive": _yes(rng, 0.15),
        "smoking": _pick(rng, ("never", "former", "current"), (0.8, 0.08, 0.12))
        if diagnosis == "igm"
        else _pick(rng, ("never", "former", "current"), (0.45, 0.15, 0.40)),
        "nipple_inversion": _yes(rng, 0.25 if diagnosis == "igm" else 0.6),
        "side": _pick(rng, ("left", "right", "bilateral"), (0.47, 0.47, 0.06)),
        "presentation": presentation,
        "symptom_weeks": int(rng.integers(1, 40)),
        "crp_mg_l": round(float(rng.lognormal(np.log(12), 0.8)), 1),
        "wbc_10e9_l": round(float(np.clip(rng.normal(8.5, 2.4), 3, 25)), 1),
        "prolactin_ng_ml": round(float(rng.lognormal(np.log(18), 0.5)), 1),
        "ana": _pick(rng, ("positive", "negative", "not_done"), (0.11, 0.79, 0.10)),
        "ace": _pick(rng, ("raised", "normal", "not_done"), (0.035, 0.82, 0.145)),
        "tsh_miu_l": round(float(rng.lognormal(np.log(2.0), 0.45)), 2),
        "hypothyroidism": _yes(rng, 0.07),
        "culture": culture,
        "purulent_aspirate": _yes(rng, 0.35),
        "infection_evidence": infection,
        "us_size_1_mm": round(size1, 1),
        "us_size_2_mm": round(size2, 1),
        "us_size_3_mm": round(size3, 1),
        "birads": _pick(rng, ("3", "4a", "4b"), (0.35, 0.45, 0.20)),
        "pathology": diagnosis,
        "severity_score": severity,
    }
    if culture == "positive":
        data["organism"] = _pick(
            rng, ("corynebacterium", "staphylococcus", "other"), (0.6, 0.25, 0.15)
        )
    return data, size1, infection


def _adaptive_open_arms(enrolled_index: int) -> list[str] | None:
    # The adaptive trial dropped A early and B later (published A 10, B 78); the open arms
    # passed to the randomisation service mirror that. None: every arm open.
    if enrolled_index < 30:
        return None
    if enrolled_index < 110:
        return ["b_prednisolone", "c_methotrexate"]
    return ["c_methotrexate"]


def _follow_up(
    rng: np.random.Generator,
    *,
    month: float,
    baseline_size: float,
    truth: ArmTruth,
    cr_month: float | None,
    progresses: bool,
    relapse_month: float | None,
) -> dict[str, Any]:
    in_cr = cr_month is not None and month >= cr_month
    relapsed = relapse_month is not None and month >= relapse_month
    if relapsed:
        size = baseline_size * rng.uniform(0.3, 0.8)
        derived = "pd"
    elif in_cr:
        size = 0.0
        derived = "cr"
    elif progresses:
        size = baseline_size * (1.0 + min(0.6, 0.12 * month) + rng.uniform(0.05, 0.2))
        derived = "pd"
    else:
        target = cr_month if cr_month is not None else 18.0
        fraction = min(0.9, month / max(target, 0.5))
        size = baseline_size * max(0.1, 1 - fraction * rng.uniform(0.7, 1.0))
        derived = "pr" if size <= 0.5 * baseline_size else "sd"
    size = min(size, 190.0)
    active = derived in ("pr", "sd", "pd")
    us_done = _yes(rng, 0.92) or derived == "cr"
    data: dict[str, Any] = {
        "mass": int(active and size > 5),
        "erythema": int(active and rng.random() < 0.5),
        "abscess": int(derived == "pd" and rng.random() < 0.6),
        "fistula": int(derived == "pd" and rng.random() < 0.2),
        "ulcer": int(derived == "pd" and rng.random() < 0.1),
        "skin_involvement": int(active and rng.random() < 0.4),
        "new_abscess": int(relapsed or (progresses and rng.random() < 0.5)),
        "new_fistula": 0,
        "scar_only": int(in_cr and not relapsed and rng.random() < 0.3),
        "us_done": us_done,
        "treatment_escalated": 0,
        "relapse": int(relapsed),
    }
    if us_done:
        r1 = round(size, 1)
        data["us_size_1_mm"] = r1
        data["us_size_2_mm"] = round(r1 * 0.7, 1)
        data["us_size_3_mm"] = round(r1 * 0.5, 1)
    call = derived
    if rng.random() < 0.04:  # investigators sometimes call it differently; outcomes raise a query
        call = {"cr": "pr", "pr": "sd", "sd": "pr", "pd": "sd"}[derived]
    if call == "cr" and (data["abscess"] or data["fistula"]):
        call = "pd"
    data["investigator_response"] = call
    return data


def generate_cohort(
    session: Session,
    *,
    protocol_id: str,
    n_subjects: int,
    rng: np.random.Generator,
    sites: Sequence[Site],
    vault: Vault | None = None,
    progress: Callable[[int], None] | None = None,
) -> CohortSummary:
    """Screen ``n_subjects`` synthetic patients into ``protocol_id`` and follow them to the end.

    The protocol must be registered. Returns what was written; ``progress`` is called with 1
    after each subject.
    """
    pv = records.latest_protocol_version(session, protocol_id)
    protocol = records.protocol_of(pv)
    truth_by_arm = TRUTH.get(protocol.id) or {
        a.key: ArmTruth(0.8, 3.0, 0.15, 0.05) for a in protocol.arms
    }
    summary = CohortSummary(protocol_id=protocol.id)
    start = ACCRUAL_START.get(protocol.id, dt.date(2020, 1, 1))
    accrual_days = 3 * 365
    follow_months = [(e, e.day / MONTH_DAYS) for e in protocol.schedule if e.kind == "follow_up"]
    screen_days = np.sort(rng.integers(0, accrual_days, size=n_subjects))
    # the master seed of the allocation lists, drawn from the cohort's generator (reproducible)
    list_seed = int(rng.integers(2**63)) if protocol.is_randomised else None

    for index in range(n_subjects):
        screened_on = start + dt.timedelta(days=int(screen_days[index]))
        screening, severity = _screening(rng, protocol, screened_on)
        identity = _identity(rng, screening["age"], screened_on) if vault is not None else None
        subject = records.screen(
            session,
            protocol_id=protocol.id,
            site=sites[index % len(sites)],
            screening=screening,
            actor=ACTOR,
            identity=identity,
            vault=vault,
        )
        summary.screened += 1
        summary.forms_saved += 1
        summary.study_ids.append(subject.study_id)
        if subject.status != "consented":
            summary.ineligible += 1
            if progress:
                progress(1)
            continue
        enrolled_on = screened_on + dt.timedelta(days=int(rng.integers(0, 8)))
        records.enrol(session, subject=subject, actor=ACTOR, enrolled_on=enrolled_on)
        summary.enrolled += 1
        if protocol.is_randomised and subject.arm is None:
            open_arms = (
                _adaptive_open_arms(summary.enrolled - 1) if protocol.design == "adaptive" else None
            )
            randomisation.randomise(
                session, subject=subject, actor=ACTOR, active_arms=open_arms, seed=list_seed
            )
        _follow_subject(
            rng,
            session=session,
            subject=subject,
            protocol=protocol,
            truth=truth_by_arm[subject.arm or protocol.arms[0].key],
            severity=severity,
            diagnosis=str(screening["diagnosis"]),
            enrolled_on=enrolled_on,
            follow_months=follow_months,
            summary=summary,
            vault=vault,
        )
        if progress:
            progress(1)
    return summary


def _follow_subject(
    rng: np.random.Generator,
    *,
    session: Session,
    subject: Subject,
    protocol: Protocol,
    truth: ArmTruth,
    severity: int,
    diagnosis: str,
    enrolled_on: dt.date,
    follow_months: list[tuple[Any, float]],
    summary: CohortSummary,
    vault: Vault | None,
) -> None:
    writer = _Writer(session, subject, summary, vault)
    baseline, size1, infection = _baseline(rng, enrolled_on, severity, diagnosis)
    if rng.random() < 0.3:  # a typo first: a lesion of 1.5 metres is refused, then corrected
        writer.try_invalid("baseline", {**baseline, "us_size_1_mm": size1 * 40})
    writer.save("baseline", baseline)

    arm = subject.arm or ""
    if any(e.kind == "treatment" and (not e.arms or arm in e.arms) for e in protocol.schedule):
        _treatment(rng, writer, protocol, arm, enrolled_on, infection)

    cr_month: float | None = None
    if rng.random() < truth.cr_probability:
        cr_month = float(np.clip(rng.lognormal(np.log(truth.median_months_to_cr), 0.55), 0.6, 20))
    progresses = cr_month is None and rng.random() < truth.progression_probability / max(
        1e-9, 1 - truth.cr_probability
    )
    relapse_month = None
    if cr_month is not None and rng.random() < truth.relapse_probability:
        relapse_month = cr_month + float(rng.uniform(2, 10))
    dropout_month = float(rng.uniform(1, 12)) if rng.random() < 0.06 else None
    withdraw = dropout_month is not None and rng.random() < 0.3
    rescued = False
    last_visit = enrolled_on

    for spec, month in follow_months:
        if dropout_month is not None and month > dropout_month:
            break
        if rng.random() < 0.05:  # missed visit
            continue
        shift = int(rng.integers(-spec.window_before, spec.window_after + 1))
        if rng.random() < 0.05:  # late visit outside its window: a protocol deviation
            shift = spec.window_after + int(rng.integers(3, 15))
        visit_on = enrolled_on + dt.timedelta(days=spec.day + shift)
        data = _follow_up(
            rng,
            month=month,
            baseline_size=size1,
            truth=truth,
            cr_month=cr_month,
            progresses=progresses,
            relapse_month=relapse_month,
        )
        data["assessment_date"] = _iso(visit_on)
        writer.save("follow_up", data, event_key=spec.key)
        last_visit = visit_on
        if progresses and not rescued and month >= 2 and rng.random() < 0.5:
            therapy = "surgery" if rng.random() < 0.5 else "systemic_steroid"
            if protocol.id == "refractory-igm-adaptive":
                therapy = "methotrexate" if rng.random() < 0.5 else "surgery"
            writer.save(
                "rescue_therapy",
                {
                    "start_date": _iso(visit_on + dt.timedelta(days=3)),
                    "therapy": therapy,
                    "reason": "progression",
                },
                event_key="unscheduled",
            )
            rescued = True

    if rng.random() < 0.22:
        onset = enrolled_on + dt.timedelta(days=int(rng.integers(1, 60)))
        grade = int(rng.choice([1, 2, 3], p=[0.6, 0.32, 0.08]))
        ae = {
            "term": _pick(
                rng,
                (
                    "breast pain",
                    "nipple bleeding",
                    "weight gain",
                    "insomnia",
                    "raised liver enzymes",
                    "nausea",
                ),
            ),
            "onset_date": _iso(onset),
            "resolved_date": _iso(onset + dt.timedelta(days=int(rng.integers(1, 20)))),
            "ctcae_grade": grade,
            "serious": int(grade >= 3 and rng.random() < 0.5),
            "relatedness": _pick(rng, ("unrelated", "unlikely", "possible", "probable")),
            "outcome": "recovered",
        }
        if rng.random() < 0.2:  # resolved before it began: the cross-field rule must refuse it
            writer.try_invalid(
                "adverse_event",
                {**ae, "resolved_date": _iso(onset - dt.timedelta(days=2))},
                event_key="unscheduled",
            )
        writer.save("adverse_event", ae, event_key="unscheduled")

    reason = "completed"
    if dropout_month is not None:
        reason = "withdrawn" if withdraw else "lost_to_follow_up"
    writer.save(
        "end_of_study",
        {"end_date": _iso(last_visit), "reason": reason, "last_contact_date": _iso(last_visit)},
    )
    status = {"completed": "completed", "withdrawn": "withdrawn"}.get(reason, "lost_to_follow_up")
    records.change_status(
        session, subject=subject, status=status, actor=ACTOR, reason=f"end of study: {reason}"
    )
    if status == "withdrawn":
        summary.withdrawn += 1
    elif status == "lost_to_follow_up":
        summary.lost_to_follow_up += 1


def _treatment(
    rng: np.random.Generator,
    writer: _Writer,
    protocol: Protocol,
    arm: str,
    start: dt.date,
    infection: int,
) -> None:
    if arm == "lavage" or (
        protocol.design == "single_arm" and "lavage_session" in {f.key for f in protocol.forms}
    ):
        spec = next(e for e in protocol.schedule if "lavage_session" in e.forms)
        count = spec.repeat.count if spec.repeat else 1
        every = spec.repeat.every_days if spec.repeat else 2
        sessions = int(rng.integers(max(2, count - 3), count + 1))
        for i in range(1, sessions + 1):
            day = start + dt.timedelta(days=spec.day + (i - 1) * every)
            infusion: dict[str, Any] = {
                "session_date": _iso(day),
                "session_number": i,
                "procedure": "infusion",
                "steroid_agent": "dexamethasone",
                "steroid_dose_mg": float(rng.choice([2.5, 5.0])),
                "antibiotic_added": infection,
                "irrigation_volume_ml": float(rng.choice([10, 15, 20])),
                "ducts_cannulated": int(rng.integers(1, 5)),
                "duration_min": int(rng.integers(6, 18)),
                "complication": _pick(
                    rng, ("none", "pain", "bleeding", "perforation"), (0.88, 0.06, 0.04, 0.02)
                ),
            }
            if infection:
                infusion["antibiotic_agent"] = "gentamicin"
            writer.save("lavage_session", infusion, event_key=spec.key, event_instance=i)
            massage = {
                "session_date": _iso(day + dt.timedelta(days=1)),
                "session_number": i,
                "procedure": "massage",
                "duration_min": int(rng.integers(5, 15)),
                "complication": "none",
            }
            writer.save("lavage_session", massage, event_key=spec.key, event_instance=i)
        return
    regimen = {
        "steroid": "prednisolone",
        "b_prednisolone": "prednisolone",
        "c_methotrexate": "methotrexate_low_dose_steroid",
        "a_supportive": "supportive",
    }.get(arm, "other")
    course: dict[str, Any] = {
        "start_date": _iso(start),
        "regimen": regimen,
        "planned_weeks": 26 if regimen == "prednisolone" else 52,
    }
    if regimen == "prednisolone":
        course["prednisolone_mg_day"] = float(rng.choice([20, 30, 40]))
    if regimen == "methotrexate_low_dose_steroid":
        course["methotrexate_mg_week"] = float(rng.choice([7.5, 10, 12.5, 15]))
        course["prednisolone_mg_day"] = 5.0
    writer.save("treatment_course", course)
