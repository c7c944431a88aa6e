"""Interim analysis of an adaptive trial: each arm's posterior from the data so far, keep or drop.

This is the data side of ``ductal design interim``. It counts, per arm, the randomised subjects,
those evaluated at the protocol's interim assessment and the responders among them, then hands
the counts to :func:`ductal.design.rules.assess_arms` — the same rules the design simulator
applies — with the protocol's settings:

| setting | meaning | refractory-igm-adaptive |
|---|---|---|
| ``interim_prior_a``, ``interim_prior_b`` | Beta prior of every arm's response rate | 1, 1 |
| ``interim_response_threshold`` | the rate an arm must plausibly exceed | 0.5 |
| ``interim_futility_probability`` | drop an arm when P(rate > threshold) is below this | 0.05 |
| ``interim_assessment`` | event whose response counts (``latest``: last follow-up) | month_12 |
| ``interim_responders`` | investigator response codes counted as response | [cr] |

A responder is a subject whose investigator response (the protocol's ``response.investigator_field``
on ``response.form``) at the assessment is one of the responder codes; a subject without that
assessment yet is randomised but not evaluated. Arms closed with
:func:`ductal.randomisation.close_arm` are reported as already dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import records
from ductal.design import posterior
from ductal.design.rules import assess_arms
from ductal.design.spec import parse_design
from ductal.errors import Conflict, Problem, ValidationError
from ductal.models import Event, FormRecord, Subject
from ductal.protocols.model import Protocol
from ductal.randomisation.service import closed_arms

LATEST = "latest"
METHOD = (
    "Beta-binomial posterior per arm; P(rate > threshold) from the regularised incomplete beta "
    "function and P(best) by numerical integration (ductal.design.posterior); keep/drop by "
    "ductal.design.rules.assess_arms, the rules of the design simulator"
)


@dataclass(frozen=True)
class InterimRules:
    """The protocol's adaptive rules as the interim applies them."""

    prior_a: float
    prior_b: float
    threshold: float
    drop_bound: float
    assessment: str
    responders: tuple[str, ...]

    @classmethod
    def from_protocol(
        cls,
        protocol: Protocol,
        *,
        assessment: str | None = None,
        responders: Sequence[str] | None = None,
    ) -> InterimRules:
        """Return the protocol's rules, with the assessment and responder codes overridable."""
        s = protocol.settings
        problems: list[Problem] = []

        def number(key: str, default: float | None, low: float, high: float) -> float:
            value = s.get(key, default)
            if value is None:
                problems.append(Problem(f"settings.{key}", "is required for an interim analysis"))
                return float("nan")
            try:
                out = float(value)
            except (TypeError, ValueError):
                problems.append(Problem(f"settings.{key}", f"must be a number, got {value!r}"))
                return float("nan")
            if not low < out < high:
                problems.append(Problem(f"settings.{key}", f"must be between {low} and {high}"))
            return out

        rules = cls(
            prior_a=number("interim_prior_a", 1.0, 0.0, float("inf")),
            prior_b=number("interim_prior_b", 1.0, 0.0, float("inf")),
            threshold=number("interim_response_threshold", None, 0.0, 1.0),
            drop_bound=number("interim_futility_probability", None, 0.0, 1.0),
            assessment=str(assessment or s.get("interim_assessment", LATEST)),
            responders=tuple(responders or s.get("interim_responders", ["cr"])),
        )
        if rules.assessment != LATEST:
            try:
                event = protocol.event(rules.assessment)
            except KeyError:
                event = None
            if event is None or protocol.response.form not in event.forms:
                problems.append(
                    Problem(
                        "assessment",
                        f"{rules.assessment!r} is not an event collecting form "
                        f"{protocol.response.form!r} (or say {LATEST!r})",
                    )
                )
        field = _response_field(protocol)
        codes = {c.code for c in field.choices} if field is not None else set()
        for code in rules.responders:
            if code not in codes:
                problems.append(
                    Problem(
                        "responders",
                        f"{code!r} is not a response code ({', '.join(sorted(codes))})",
                    )
                )
        if not rules.responders:
            problems.append(Problem("responders", "name at least one response code"))
        if problems:
            raise ValidationError(f"cannot run the interim of {protocol.id}", problems=problems)
        return rules


@dataclass(frozen=True)
class ArmInterim:
    """One arm at the interim look."""

    arm: str
    label: str
    open: bool
    randomised: int
    evaluated: int
    responders: int
    posterior_a: float
    posterior_b: float
    posterior_mean: float
    p_above_threshold: float
    p_best: float
    recommendation: str
    reason: str


@dataclass(frozen=True)
class InterimReport:
    """What ``ductal design interim`` prints."""

    protocol_id: str
    protocol_version: str
    rules: InterimRules
    arms: list[ArmInterim]
    method: str = METHOD

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rules"]["responders"] = list(self.rules.responders)
        return out


def _response_field(protocol: Protocol) -> Any:
    try:
        return protocol.form(protocol.response.form).field(protocol.response.investigator_field)
    except KeyError:
        return None


def arm_counts(
    session: Session, protocol: Protocol, rules: InterimRules
) -> dict[str, tuple[int, int, int]]:
    """Return (randomised, evaluated, responders) per arm, from the database."""
    form = protocol.response.form
    field = protocol.response.investigator_field
    counts = {a.key: [0, 0, 0] for a in protocol.arms}
    subjects = session.execute(
        select(Subject.id, Subject.arm).where(
            Subject.protocol_id == protocol.id, Subject.arm.is_not(None)
        )
    ).all()
    arm_of = {sid: arm for sid, arm in subjects if arm in counts}
    for arm in arm_of.values():
        counts[arm][0] += 1
    order = {e.key: i for i, e in enumerate(protocol.schedule)}
    stmt = (
        select(FormRecord.subject_id, Event.event_key, Event.occurred_on, FormRecord.data)
        .join(Event, FormRecord.event_id == Event.id)
        .join(Subject, FormRecord.subject_id == Subject.id)
        .where(
            Subject.protocol_id == protocol.id,
            Subject.arm.is_not(None),
            FormRecord.form_key == form,
        )
    )
    if rules.assessment != LATEST:
        stmt = stmt.where(Event.event_key == rules.assessment)
    chosen: dict[int, tuple[tuple[dt.date, int], Any]] = {}
    for subject_id, event_key, occurred_on, data in session.execute(stmt):
        value = data.get(field)
        if value is None or subject_id not in arm_of:
            continue
        when = (occurred_on or dt.date.min, order.get(event_key, -1))
        if subject_id not in chosen or when > chosen[subject_id][0]:
            chosen[subject_id] = (when, value)
    for subject_id, (_when, value) in chosen.items():
        tally = counts[arm_of[subject_id]]
        tally[1] += 1
        tally[2] += int(value in rules.responders)
    return {arm: (c[0], c[1], c[2]) for arm, c in counts.items()}


def interim(
    session: Session,
    *,
    protocol_id: str,
    assessment: str | None = None,
    responders: Sequence[str] | None = None,
) -> InterimReport:
    """Return each arm's posterior and the keep/drop recommendation of the protocol's rules."""
    pv = records.latest_protocol_version(session, protocol_id)
    protocol = records.protocol_of(pv)
    if protocol.design != "adaptive":
        raise Conflict(f"{protocol_id} is not an adaptive protocol; it has no interim rules")
    rules = InterimRules.from_protocol(protocol, assessment=assessment, responders=responders)
    counts = arm_counts(session, protocol, rules)
    closed = closed_arms(session, protocol.id)
    keys = [a.key for a in protocol.arms]
    design = parse_design(
        {
            "name": f"{protocol.id} interim",
            "arms": [{"id": k} for k in keys],
            "looks": [protocol.target_enrolment],
            "prior": {"a": rules.prior_a, "b": rules.prior_b},
            "rules": {
                "inadequate_response": {"threshold": rules.threshold, "bound": rules.drop_bound},
                "stop_when_one_arm_left": False,
            },
            # the design schema asks for a scenario to simulate; an interim never simulates
            "scenarios": [{"name": "not simulated", "rates": dict.fromkeys(keys, 0.5)}],
        },
        source=f"{protocol.id} settings",
    )
    active = {k for k in keys if k not in closed}
    assessed = assess_arms(
        design, {k: (c[2], c[1]) for k, c in counts.items()}, active=active, final=False
    )
    a = np.array([[x.posterior_a for x in assessed]])
    b = np.array([[x.posterior_b for x in assessed]])
    best = posterior.prob_best(a, b, np.array([[k in active for k in keys]]))[0]
    arms = [
        ArmInterim(
            arm=x.arm,
            label=protocol.arm(x.arm).label.en,
            open=x.arm in active,
            randomised=counts[x.arm][0],
            evaluated=x.n,
            responders=x.responders,
            posterior_a=x.posterior_a,
            posterior_b=x.posterior_b,
            posterior_mean=x.posterior_mean,
            p_above_threshold=float(x.p_above_threshold)
            if x.p_above_threshold is not None
            else float("nan"),
            p_best=float(best[i]),
            recommendation=x.recommendation,
            reason=_reason(x.recommendation, x.reason, x.p_above_threshold, rules),
        )
        for i, x in enumerate(assessed)
    ]
    return InterimReport(
        protocol_id=protocol.id, protocol_version=protocol.version, rules=rules, arms=arms
    )


def _reason(recommendation: str, reason: str, p_above: float | None, rules: InterimRules) -> str:
    if p_above is None:
        return reason
    shown = f"P(rate > {rules.threshold:g}) = {p_above:.3g}"
    if reason.startswith("inadequate response"):
        return f"inadequate response: {shown} < {rules.drop_bound:g}"
    if recommendation == "keep":
        return f"{shown} >= {rules.drop_bound:g}"
    return f"{reason} ({shown})"
