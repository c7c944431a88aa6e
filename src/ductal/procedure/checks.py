"""Indication and safety checks before a session, and the investigator's audited override.

The checks are protocol rules (``settings.procedure.checks``) evaluated on the
``pre_session_checks`` form plus what ductal already knows about the subject (a flagged pathology
result). A session cannot be recorded as started on a day whose checks leave a ``block`` open,
unless an investigator has overridden that check with a reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import accounts, audit, forms, records
from ductal.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationError
from ductal.models import AuditEntry, FormRecord, Subject
from ductal.procedure import course, pathology
from ductal.procedure.rules import Finding, evaluate, procedure_settings
from ductal.protocols.model import Protocol
from ductal.vault import Vault

OVERRIDE_ROLES = frozenset({"investigator"})
NO_CHECKS = "no_checks"


@dataclass(frozen=True)
class CheckReport:
    """The checks found for one day: every finding, and which blocks are still open."""

    day: dt.date
    record_id: int | None
    findings: list[Finding]
    overridden: dict[str, str] = field(default_factory=dict)  # check key -> reason

    @property
    def open_blocks(self) -> list[Finding]:
        return [f for f in self.findings if f.blocking and f.key not in self.overridden]

    @property
    def may_start(self) -> bool:
        return not self.open_blocks

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "record_id": self.record_id,
            "may_start": self.may_start,
            "findings": [f.to_dict() for f in self.findings],
            "open_blocks": [f.key for f in self.open_blocks],
            "overridden": dict(self.overridden),
        }


def evaluate_checks(
    protocol: Protocol,
    data: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    lang: str = "en",
) -> list[Finding]:
    """Return the protocol's checks that hold for a ``pre_session_checks`` answer set (pure)."""
    settings = procedure_settings(protocol)
    env = dict(context or {})
    env.update(data)
    form = protocol.form(settings.checks_form)
    return evaluate(settings.checks, form_key=settings.checks_form, env=env, lang=lang, form=form)


def subject_context(session: Session, subject: Subject) -> dict[str, Any]:
    """Return what the checks may use beyond the form: ``pathology_flag`` (1 when flagged)."""
    return {"pathology_flag": 1 if pathology.is_flagged(session, subject) else 0}


def _date(value: Any) -> dt.date | None:
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def treatment_event(protocol: Protocol, form_key: str) -> str:
    """Return the key of the (treatment) event at which the protocol collects ``form_key``."""
    for spec in protocol.schedule:
        if form_key in spec.forms and spec.kind == "treatment":
            return spec.key
    for spec in protocol.schedule:
        if form_key in spec.forms:
            return spec.key
    raise NotFound(f"protocol {protocol.id} collects {form_key!r} at no event")


def session_event_instance(session: Session, subject: Subject, event_key: str, day: dt.date) -> int:
    """Return the instance of the repeating treatment event whose date is nearest ``day``."""
    events = [e for e in records.subject_events(session, subject) if e.event_key == event_key]
    dated = [e for e in events if e.scheduled_on is not None or e.occurred_on is not None]
    if not dated:
        return 1
    for event in dated:
        if (
            event.window_start
            and event.window_end
            and event.window_start <= day <= event.window_end
        ):
            return event.instance

    def distance(e: Any) -> int:
        when = e.scheduled_on or e.occurred_on
        return abs((when - day).days)

    return min(dated, key=lambda e: (distance(e), e.instance)).instance


def record_checks(
    session: Session,
    *,
    subject: Subject,
    data: Mapping[str, Any],
    actor: str,
    vault: Vault | None = None,
    today: dt.date | None = None,
    lang: str = "en",
) -> tuple[FormRecord, CheckReport]:
    """Save a ``pre_session_checks`` form (validated, audited) and return it with its report."""
    protocol = records.subject_protocol(subject)
    settings = procedure_settings(protocol)
    form_key = settings.checks_form
    event_key = treatment_event(protocol, form_key)
    day = _date(data.get("check_date"))
    if day is None or not course.recorded_sessions(session, subject):
        instance = 1  # before the course starts, the checks belong to its first visit
    else:
        instance = session_event_instance(session, subject, event_key, day)
    record = forms.save_form(
        session,
        subject=subject,
        form_key=form_key,
        data=data,
        actor=actor,
        event_key=event_key,
        event_instance=instance,
        vault=vault,
        today=today,
    )
    checked = dt.date.fromisoformat(record.data["check_date"])
    report = checks_for_day(session, subject=subject, day=checked, lang=lang)
    return record, report


def _checks_records(session: Session, subject: Subject, day: dt.date) -> list[FormRecord]:
    protocol = records.subject_protocol(subject)
    form_key = procedure_settings(protocol).checks_form
    return [
        r
        for r in records.subject_records(session, subject, form_key)
        if r.data.get("check_date") == day.isoformat()
    ]


def overrides(session: Session, record_id: int) -> dict[str, str]:
    """Return the checks overridden on a checks record, with the investigator's reasons."""
    entries = session.scalars(
        select(AuditEntry)
        .where(
            AuditEntry.entity_type == "form_record",
            AuditEntry.entity_id == str(record_id),
            AuditEntry.action == "override",
        )
        .order_by(AuditEntry.id)
    )
    return {str((e.after or {}).get("check")): e.reason or "" for e in entries}


def checks_for_day(
    session: Session, *, subject: Subject, day: dt.date, lang: str = "en"
) -> CheckReport:
    """Return the checks of the latest ``pre_session_checks`` record dated ``day``.

    With no record for that day the report holds one blocking finding, ``no_checks``.
    """
    protocol = records.subject_protocol(subject)
    found = _checks_records(session, subject, day)
    if not found:
        message = {
            "en": f"No pre-session checks recorded for {day.isoformat()}",
            "zh": f"{day.isoformat()}未记录操作前核查",
        }["zh" if lang.startswith("zh") else "en"]
        return CheckReport(day, None, [Finding(NO_CHECKS, "block", message)])
    latest = found[-1]
    findings = evaluate_checks(
        protocol, latest.data, context=subject_context(session, subject), lang=lang
    )
    return CheckReport(day, latest.id, findings, overrides(session, latest.id))


def _may_override(session: Session, *, actor: str, subject: Subject) -> bool:
    try:
        user = accounts.get_user(session, actor)
    except NotFound:
        return False
    roles = accounts.roles_at(session, user).get(subject.site_id, set())
    return bool(roles & OVERRIDE_ROLES)


def override_check(
    session: Session,
    *,
    subject: Subject,
    day: dt.date,
    check: str,
    reason: str,
    actor: str,
) -> CheckReport:
    """Let an investigator at the subject's site override an open blocking check, with a reason.

    The override is an audit entry (action ``override``) on the day's checks record, so it is
    kept, hash-chained, with who, when and why. Returns the updated report.
    """
    if not reason.strip():
        raise ValidationError("a reason is required", problems=[Problem("reason", "is required")])
    if not _may_override(session, actor=actor, subject=subject):
        raise PermissionDenied(
            f"only an investigator at the subject's site may override a check ({actor!r} is not)"
        )
    report = checks_for_day(session, subject=subject, day=day)
    if report.record_id is None:
        raise Conflict(f"no pre-session checks recorded for {day.isoformat()}; record them first")
    blocking = {f.key for f in report.findings if f.blocking}
    if check not in blocking:
        raise ValidationError(
            "nothing to override",
            problems=[
                Problem("check", f"{check!r} is not a blocking check that day")
                if check not in report.overridden
                else Problem("check", f"{check!r} is already overridden")
            ],
        )
    if check in report.overridden:
        raise Conflict(f"check {check!r} is already overridden")
    audit.record(
        session,
        actor=actor,
        action="override",
        entity_type="form_record",
        entity_id=report.record_id,
        after={"check": check, "day": day.isoformat()},
        reason=reason.strip(),
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    return checks_for_day(session, subject=subject, day=day)


def require_may_start(session: Session, *, subject: Subject, day: dt.date) -> CheckReport:
    """Return the day's check report; Conflict naming the open blocks if none may start."""
    report = checks_for_day(session, subject=subject, day=day)
    if not report.may_start:
        raise Conflict(
            f"session for {subject.study_id} on {day.isoformat()} cannot start: "
            + "; ".join(f"{f.key} ({f.message})" for f in report.open_blocks)
            + " — resolve them or have an investigator override them with a reason"
        )
    return report
