"""Analysis datasets: one tidy row per enrolled subject, and one row per follow-up assessment.

Built from a :class:`~ductal.outcomes.extract.StudyExtract` without touching the database. The
definitions (docs/outcomes.md has the long form):

* time origin: the enrolment date; days are converted to months as days / 30.4375;
* **time to first CR**: the first follow-up assessment whose derived overall response is CR.
  Status 1 (CR) when it comes on or before the first competing event; status 2 (competing) when
  a competing therapy (the primary time-to-event endpoint's ``competing`` list, e.g. surgery,
  systemic corticosteroid, methotrexate — from the rescue therapy form) starts first; otherwise
  censored (0) at the last assessment;
* **relapse after CR**: a later assessment with the relapse field ticked or a derived PD; time from
  the first CR, censored at the last assessment;
* **CR by the horizon**: status 1 with the first CR on or before the primary binary endpoint's
  horizon plus the window of the visit nearest it (365 + 30 days for a one-year endpoint);
* **populations**: intention to treat (ITT) = every enrolled subject with an arm, analysed as
  allocated; per protocol (PP) = ITT without subjects who did not receive the allocated
  treatment, had no follow-up assessment, withdrew consent, or were lost before the horizon
  without a CR. ``pp_exclusion`` names every reason that applies.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ductal.outcomes.extract import StudyExtract
from ductal.outcomes.response import (
    best_response,
    classify_series,
    investigator_call,
    lesion_size,
)
from ductal.protocols.model import Protocol, ResponseCriteria

MONTH_DAYS = 30.4375
DEFAULT_COMPETING = ("surgery", "systemic_steroid", "methotrexate")
RELATED = ("possible", "probable", "definite")
STATUS_CODES = {0: "censored", 1: "complete response", 2: "competing event"}


@dataclass(frozen=True)
class DataProblem:
    """Something the derivation could not use or found contradictory, for one subject."""

    study_id: str
    kind: str
    detail: str


@dataclass
class AnalysisData:
    """The derived datasets of one protocol, and the problems met while deriving them."""

    protocol: Protocol
    subjects: pd.DataFrame
    assessments: pd.DataFrame
    adverse_events: pd.DataFrame
    screening: pd.DataFrame
    problems: list[DataProblem] = field(default_factory=list)
    open_queries: pd.DataFrame = field(default_factory=pd.DataFrame)
    horizon_days: int = 365
    horizon_grace_days: int = 0
    competing: tuple[str, ...] = DEFAULT_COMPETING

    def problems_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [(p.study_id, p.kind, p.detail) for p in self.problems],
            columns=["study_id", "kind", "detail"],
        )


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Return the rows of ``frame`` as dictionaries keyed by column name."""
    return cast(list[dict[str, Any]], frame.to_dict("records"))


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _num(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, int | float):
        return float(value)
    return math.nan


def _yes(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    return 1.0 if value in (1, True, "1", "yes") else 0.0


def primary_settings(protocol: Protocol) -> tuple[int, tuple[str, ...]]:
    """Return the primary binary horizon (days) and the competing events of time to CR."""
    horizon = 365
    binaries = [e for e in protocol.endpoints if e.kind == "binary" and e.horizon_days]
    primary = [e for e in binaries if e.primary] or binaries
    if primary and primary[0].horizon_days:
        horizon = primary[0].horizon_days
    competing: tuple[str, ...] = DEFAULT_COMPETING
    for ep in protocol.endpoints:
        if ep.event == "complete_response" and ep.kind in ("time_to_event", "competing_risks"):
            competing = tuple(ep.competing)
            break
    return horizon, competing


def _grace(protocol: Protocol, horizon: int) -> int:
    visits = [e for e in protocol.schedule if e.kind == "follow_up"]
    if not visits:
        return 0
    nearest = min(visits, key=lambda e: abs(e.day - horizon))
    return nearest.window_after if abs(nearest.day - horizon) <= 31 else 0


def _treatment_forms(protocol: Protocol, arm: str | None) -> set[str]:
    forms: set[str] = set()
    for e in protocol.schedule:
        if e.kind == "treatment" and (not e.arms or arm in e.arms):
            forms.update(e.forms)
    return forms


def _by_subject(records: pd.DataFrame) -> dict[int, list[tuple[Any, ...]]]:
    grouped: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    if records.empty:
        return grouped
    cols = [
        "subject_id",
        "form_key",
        "data",
        "event_key",
        "window_start",
        "window_end",
        "record_id",
    ]
    for row in zip(*(records[c].tolist() for c in cols), strict=True):
        grouped[int(row[0])].append(row)
    return grouped


def _screening_frame(extract: StudyExtract, by_subject: Mapping[int, list[Any]]) -> pd.DataFrame:
    protocol = extract.protocol
    rows = []
    for s in records_of(extract.subjects):
        screening: dict[str, Any] = {}
        for row in by_subject.get(int(s["subject_id"]), []):
            if row[1] == protocol.screening_form:
                screening = row[2] or {}
                break
        rows.append(
            {
                "study_id": s["study_id"],
                "site": s["site"],
                "status": s["status"],
                "status_reason": s["status_reason"],
                "arm": s["arm"],
                "enrolled": s["enrolled_on"] is not None and not pd.isna(s["enrolled_on"]),
                "consent_signed": _yes(screening.get("consent_signed")),
                "diagnosis": screening.get("diagnosis"),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "study_id",
            "site",
            "status",
            "status_reason",
            "arm",
            "enrolled",
            "consent_signed",
            "diagnosis",
        ],
    )


@dataclass
class _Course:
    """One subject's follow-up assessments, classified, and what they add up to."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)
    cr_date: dt.date | None = None
    relapse_date: dt.date | None = None
    last_date: dt.date | None = None
    out_of_window: int = 0
    missing_us: int = 0
    disagreements: int = 0
    best_change: float = math.nan
    responses: list[str] = field(default_factory=list)
    response_by_horizon: list[str] = field(default_factory=list)


def _follow_up_course(
    records: list[tuple[Any, ...]],
    *,
    study_id: str,
    site: Any,
    arm: Any,
    enrolled_on: dt.date,
    baseline: dict[str, Any] | None,
    criteria: ResponseCriteria,
    last_day: int,
) -> _Course:
    """Classify one subject's assessments in date order and follow CR, relapse and windows."""
    course = _Course()
    raw = []
    for row in records:
        data = row[2] or {}
        when = _date(data.get("assessment_date"))
        if when is None:
            course.problems.append(
                DataProblem(study_id, "no assessment date", f"{row[3]}: assessment undated")
            )
            continue
        raw.append((when, row))
    raw.sort(key=lambda item: item[0])
    calls = classify_series([r[2] or {} for _, r in raw], criteria=criteria, baseline=baseline)
    baseline_size = lesion_size(baseline, criteria) if baseline else math.nan
    cr_date: dt.date | None = None
    relapse_date: dt.date | None = None
    seen_cr = False
    last_date: dt.date | None = None
    out_of_window = missing_us = disagreements = 0
    best_change = math.nan
    responses: list[str] = []
    response_by_horizon: list[str] = []
    for (when, row), call in zip(raw, calls, strict=True):
        data = row[2] or {}
        day = (when - enrolled_on).days
        wstart, wend = _date(row[4]), _date(row[5])
        in_window = None if wstart is None or wend is None else wstart <= when <= wend
        if in_window is False:
            out_of_window += 1
        if math.isnan(call.size_mm):
            missing_us += 1
        if not math.isnan(call.change):
            best_change = call.change if math.isnan(best_change) else min(best_change, call.change)
        investigator = investigator_call(data, criteria)
        agrees = None if investigator is None else investigator == call.overall
        if agrees is False:
            disagreements += 1
        relapse_flag = (
            criteria.relapse_field is not None and _yes(data.get(criteria.relapse_field)) == 1.0
        )
        is_relapse = False
        if seen_cr and relapse_date is None and (relapse_flag or call.overall == "PD"):
            relapse_date = when
            is_relapse = True
        if relapse_flag and not seen_cr:
            course.problems.append(
                DataProblem(
                    study_id,
                    "contradictory entry",
                    f"{row[3]} ({when}): relapse recorded before any complete response",
                )
            )
        scar = criteria.scar_field is not None and _yes(data.get(criteria.scar_field)) == 1.0
        if scar and call.signs > 0:
            course.problems.append(
                DataProblem(
                    study_id,
                    "contradictory entry",
                    f"{row[3]} ({when}): scar only ticked with {call.signs} active sign(s)",
                )
            )
        if call.overall == "CR" and cr_date is None:
            cr_date = when
            seen_cr = True
        responses.append(call.overall)
        if day <= last_day:
            response_by_horizon.append(call.overall)
        last_date = when if last_date is None else max(last_date, when)
        course.rows.append(
            {
                "study_id": study_id,
                "site": site,
                "arm": arm,
                "record_id": int(row[6]),
                "event_key": row[3],
                "assessment_date": when,
                "day": day,
                "month": day / MONTH_DAYS,
                "window_start": wstart,
                "window_end": wend,
                "in_window": in_window,
                "clinical_signs": call.signs,
                "lesion_size_mm": call.size_mm,
                "baseline_size_mm": baseline_size,
                "change_from_baseline": call.change,
                "clinical_response": call.clinical,
                "radiological_response": call.radiological,
                "derived_response": call.overall,
                "rule": call.rule,
                "investigator_response": investigator,
                "agrees": agrees,
                "relapse": bool(is_relapse),
            }
        )

    course.cr_date, course.relapse_date, course.last_date = cr_date, relapse_date, last_date
    course.out_of_window, course.missing_us = out_of_window, missing_us
    course.disagreements, course.best_change = disagreements, best_change
    course.responses, course.response_by_horizon = responses, response_by_horizon
    return course


def derive(extract: StudyExtract) -> AnalysisData:
    """Return the analysis datasets of one protocol (pure: no database access)."""
    protocol = extract.protocol
    criteria = protocol.response
    horizon, competing = primary_settings(protocol)
    grace = _grace(protocol, horizon)
    by_subject = _by_subject(extract.records)
    problems: list[DataProblem] = []
    subject_rows: list[dict[str, Any]] = []
    assessment_rows: list[dict[str, Any]] = []
    ae_rows: list[dict[str, Any]] = []
    follow_up_keys = {e.key for e in protocol.schedule if e.kind == "follow_up"}
    end_of_study_forms = {f for e in protocol.schedule if e.kind == "end" for f in e.forms}
    visits_by_subject: dict[int, list[tuple[str, dt.date | None]]] = defaultdict(list)
    if not extract.events.empty:
        fu = extract.events[extract.events["event_key"].isin(follow_up_keys)]
        for sid, key, wend in fu[["subject_id", "event_key", "window_end"]].itertuples(
            index=False, name=None
        ):
            visits_by_subject[int(sid)].append((str(key), _date(wend)))

    for s in records_of(extract.subjects):
        enrolled_on = _date(s["enrolled_on"])
        if enrolled_on is None:
            continue
        sid = int(s["subject_id"])
        study_id = str(s["study_id"])
        arm: str | None = s["arm"] if isinstance(s["arm"], str) else None
        rows = by_subject.get(sid, [])
        forms: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            forms[row[1]].append(row)
        screening = forms[protocol.screening_form][0][2] if forms[protocol.screening_form] else {}
        baseline = forms[criteria.baseline_form][0][2] if forms[criteria.baseline_form] else None
        if baseline is None:
            problems.append(DataProblem(study_id, "no baseline", "no baseline form recorded"))

        course = _follow_up_course(
            forms[criteria.form],
            study_id=study_id,
            site=s["site"],
            arm=s["arm"],
            enrolled_on=enrolled_on,
            baseline=baseline,
            criteria=criteria,
            last_day=horizon + grace,
        )
        problems += course.problems
        assessment_rows += course.rows
        cr_date, relapse_date, last_date = course.cr_date, course.relapse_date, course.last_date
        baseline_size = lesion_size(baseline, criteria) if baseline else math.nan
        responses, response_by_horizon = course.responses, course.response_by_horizon

        # --- rescue therapy and competing events
        rescues = []
        for row in forms.get("rescue_therapy", []):
            data = row[2] or {}
            start = _date(data.get("start_date"))
            if start is not None:
                rescues.append((start, str(data.get("therapy"))))
        rescues.sort()
        first_rescue = rescues[0] if rescues else None
        first_competing = next((r for r in rescues if r[1] in competing), None)

        status_code = 0
        event_date: dt.date | None = last_date
        competing_event: str | None = None
        if cr_date is not None and (first_competing is None or cr_date <= first_competing[0]):
            status_code, event_date = 1, cr_date
        elif first_competing is not None:
            status_code, event_date = 2, first_competing[0]
            competing_event = first_competing[1]
            if cr_date is not None:
                relapse_date = None  # CR after the competing event is not the lavage's CR
        t_days = math.nan if event_date is None else float((event_date - enrolled_on).days)
        if not math.isnan(t_days) and t_days < 0:
            problems.append(
                DataProblem(study_id, "contradictory entry", "an event is dated before enrolment")
            )
            t_days = math.nan
        if event_date is None:
            problems.append(
                DataProblem(
                    study_id,
                    "no assessment",
                    "no follow-up assessment: left out of the time-to-event analyses",
                )
            )

        relapse_event = 0
        relapse_days = math.nan
        if status_code == 1 and cr_date is not None:
            if relapse_date is not None:
                relapse_event, relapse_days = 1, float((relapse_date - cr_date).days)
            elif last_date is not None:
                relapse_days = float((last_date - cr_date).days)

        # --- treatment received
        lavage = forms.get("lavage_session", [])
        sessions = {
            (r[2] or {}).get("session_number")
            for r in lavage
            if (r[2] or {}).get("procedure", "infusion") == "infusion"
        }
        sessions.discard(None)
        treatment_forms = _treatment_forms(protocol, arm)
        received = not treatment_forms or any(forms.get(f) for f in treatment_forms)

        # --- adverse events
        ae_count = ae_serious = ae_related = 0
        ae_max = math.nan
        for row in forms.get("adverse_event", []):
            data = row[2] or {}
            grade = _num(data.get("ctcae_grade"))
            related = data.get("relatedness") in RELATED
            ae_count += 1
            ae_serious += int(_yes(data.get("serious")) == 1.0)
            ae_related += int(related)
            if not math.isnan(grade):
                ae_max = grade if math.isnan(ae_max) else max(ae_max, grade)
            ae_rows.append(
                {
                    "study_id": study_id,
                    "arm": s["arm"],
                    "term": data.get("term"),
                    "onset_date": _date(data.get("onset_date")),
                    "grade": grade,
                    "serious": _yes(data.get("serious")),
                    "relatedness": data.get("relatedness"),
                    "related": related,
                }
            )

        # --- visits missed (scheduled follow-up visits whose window closed before the end)
        end_data: dict[str, Any] = {}
        for key in end_of_study_forms:
            if forms.get(key):
                end_data = forms[key][0][2] or {}
        end_date = _date(end_data.get("end_date")) or last_date
        done_keys = {r[3] for r in forms[criteria.form]}
        missed = [
            key
            for key, wend in visits_by_subject.get(sid, [])
            if key not in done_keys
            and wend is not None
            and end_date is not None
            and wend <= end_date
        ]

        # --- covariates
        base = baseline or {}
        diagnosis = screening.get("diagnosis") or base.get("pathology")
        severity = _num(base.get("severity_score"))
        if math.isnan(severity):
            severity = _num(screening.get("severity_score"))
        severity_group = screening.get("severity_group") or (
            None if math.isnan(severity) else ("severe" if severity >= 6 else "mild")
        )
        presentation = base.get("presentation") or []
        infection = _yes(base.get("infection_evidence"))

        # --- populations
        itt_exclusion = []
        if arm is None:
            itt_exclusion.append("no arm allocated")
        pp_exclusion = list(itt_exclusion)
        if not received:
            pp_exclusion.append("allocated treatment not received")
        if event_date is None:
            pp_exclusion.append("no follow-up assessment")
        if s["status"] == "withdrawn":
            pp_exclusion.append("withdrew consent")
        horizon_reached = last_date is not None and (last_date - enrolled_on).days >= horizon - 30
        if s["status"] == "lost_to_follow_up" and status_code == 0 and not horizon_reached:
            pp_exclusion.append("lost to follow-up before the primary horizon")

        cr_by_horizon = int(status_code == 1 and t_days <= horizon + grace)
        subject_rows.append(
            {
                "study_id": study_id,
                "site": s["site"],
                "arm": s["arm"],
                "stratum": s["stratum"],
                "status": s["status"],
                "enrolled_on": enrolled_on,
                "diagnosis": diagnosis,
                "age": _num(screening.get("age")),
                "bmi": _num(base.get("bmi")),
                "smoking": base.get("smoking"),
                "parity": _num(base.get("parity")),
                "nipple_inversion": _yes(base.get("nipple_inversion")),
                "symptom_weeks": _num(base.get("symptom_weeks")),
                "crp_mg_l": _num(base.get("crp_mg_l")),
                "ana": base.get("ana"),
                "ace": base.get("ace"),
                "hypothyroidism": _yes(base.get("hypothyroidism")),
                "erythema_nodosum": float("erythema_nodosum" in presentation) if base else math.nan,
                "abscess_at_baseline": float("abscess" in presentation) if base else math.nan,
                "fistula_at_baseline": float("fistula" in presentation) if base else math.nan,
                "culture": base.get("culture"),
                "infection_evidence": infection,
                "severity_score": severity,
                "severity_group": severity_group,
                "baseline_size_mm": baseline_size,
                "lavage_sessions": len(sessions),
                "treatment_received": received,
                "n_assessments": len(course.rows),
                "n_out_of_window": course.out_of_window,
                "n_missing_ultrasound": course.missing_us,
                "n_missed_visits": len(missed),
                "missed_visits": ",".join(missed),
                "n_disagreements": course.disagreements,
                "last_assessment_day": (
                    math.nan if last_date is None else float((last_date - enrolled_on).days)
                ),
                "best_response": best_response(responses),
                "best_response_by_horizon": best_response(response_by_horizon),
                "best_change": course.best_change,
                "cr_date": cr_date,
                "time_days": t_days,
                "time_months": t_days / MONTH_DAYS,
                "status_code": status_code,
                "cr_event": int(status_code == 1),
                "competing_event": competing_event,
                "cr_by_horizon": cr_by_horizon,
                "response_by_horizon": int(
                    best_response(response_by_horizon) in ("CR", "PR") and status_code != 2
                ),
                "relapse_event": relapse_event,
                "relapse_days": relapse_days,
                "relapse_months": relapse_days / MONTH_DAYS,
                "rescue_any": int(first_rescue is not None),
                "rescue_therapy": first_rescue[1] if first_rescue else None,
                "rescue_day": (
                    float((first_rescue[0] - enrolled_on).days) if first_rescue else math.nan
                ),
                "rescue_therapies": ",".join(sorted({r[1] for r in rescues})),
                "ae_count": ae_count,
                "ae_serious": ae_serious,
                "ae_related": ae_related,
                "ae_max_grade": ae_max,
                "itt": not itt_exclusion,
                "itt_exclusion": "; ".join(itt_exclusion),
                "per_protocol": not pp_exclusion,
                "pp_exclusion": "; ".join(pp_exclusion),
            }
        )

    subjects = pd.DataFrame(subject_rows, columns=SUBJECT_DATASET_COLUMNS)
    assessments = pd.DataFrame(assessment_rows, columns=ASSESSMENT_COLUMNS)
    adverse = pd.DataFrame(ae_rows, columns=AE_COLUMNS)
    queries = extract.queries
    open_q = queries[queries["status"] != "closed"] if not queries.empty else queries
    return AnalysisData(
        protocol=protocol,
        subjects=subjects,
        assessments=assessments,
        adverse_events=adverse,
        screening=_screening_frame(extract, by_subject),
        problems=problems,
        open_queries=open_q,
        horizon_days=horizon,
        horizon_grace_days=grace,
        competing=competing,
    )


SUBJECT_DATASET_COLUMNS = [
    "study_id",
    "site",
    "arm",
    "stratum",
    "status",
    "enrolled_on",
    "diagnosis",
    "age",
    "bmi",
    "smoking",
    "parity",
    "nipple_inversion",
    "symptom_weeks",
    "crp_mg_l",
    "ana",
    "ace",
    "hypothyroidism",
    "erythema_nodosum",
    "abscess_at_baseline",
    "fistula_at_baseline",
    "culture",
    "infection_evidence",
    "severity_score",
    "severity_group",
    "baseline_size_mm",
    "lavage_sessions",
    "treatment_received",
    "n_assessments",
    "n_out_of_window",
    "n_missing_ultrasound",
    "n_missed_visits",
    "missed_visits",
    "n_disagreements",
    "last_assessment_day",
    "best_response",
    "best_response_by_horizon",
    "best_change",
    "cr_date",
    "time_days",
    "time_months",
    "status_code",
    "cr_event",
    "competing_event",
    "cr_by_horizon",
    "response_by_horizon",
    "relapse_event",
    "relapse_days",
    "relapse_months",
    "rescue_any",
    "rescue_therapy",
    "rescue_day",
    "rescue_therapies",
    "ae_count",
    "ae_serious",
    "ae_related",
    "ae_max_grade",
    "itt",
    "itt_exclusion",
    "per_protocol",
    "pp_exclusion",
]
ASSESSMENT_COLUMNS = [
    "study_id",
    "site",
    "arm",
    "record_id",
    "event_key",
    "assessment_date",
    "day",
    "month",
    "window_start",
    "window_end",
    "in_window",
    "clinical_signs",
    "lesion_size_mm",
    "baseline_size_mm",
    "change_from_baseline",
    "clinical_response",
    "radiological_response",
    "derived_response",
    "rule",
    "investigator_response",
    "agrees",
    "relapse",
]
AE_COLUMNS = [
    "study_id",
    "arm",
    "term",
    "onset_date",
    "grade",
    "serious",
    "relatedness",
    "related",
]


def export(
    data: AnalysisData, out_dir: Path | str, *, formats: Iterable[str] = ("csv", "parquet")
) -> list[Path]:
    """Write the subject, assessment and adverse-event datasets; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pid = data.protocol.id
    for name, frame in (
        ("subjects", data.subjects),
        ("assessments", data.assessments),
        ("adverse_events", data.adverse_events),
    ):
        for fmt in formats:
            path = out / f"{pid}_{name}.{fmt}"
            if fmt == "csv":
                frame.to_csv(path, index=False)
            elif fmt == "parquet":
                _parquet_ready(frame).to_parquet(path, index=False)
            else:
                raise ValueError(f"unknown format {fmt!r}")
            written.append(path)
    return written


def _parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with object columns of mixed types made Parquet-safe."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            sample = out[col].dropna()
            if not sample.empty and all(isinstance(x, dt.date) for x in sample):
                out[col] = pd.to_datetime(out[col])
            elif not sample.empty and all(isinstance(x, bool | np.bool_) for x in sample):
                out[col] = out[col].astype("boolean")
            else:
                out[col] = out[col].astype("string")
    return out
