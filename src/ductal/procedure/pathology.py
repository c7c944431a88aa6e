"""Pending pathology results: a biopsy or cytology sample waits for its report.

A sample taken at a procedure becomes an Event ``pathology_result`` (one instance per sample)
scheduled for the protocol's due date (about a week later). Entering the ``pathology_result``
form at that event closes it; a suspicious or malignant result flags the subject for
investigator review and excludes them from further lavage (a blocking pre-session check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ductal import audit, forms, queries, records
from ductal.errors import NotFound, Problem, ProtocolError, ValidationError
from ductal.models import AuditEntry, Event, FormRecord, Subject
from ductal.procedure.rules import procedure_settings
from ductal.vault import Vault

SAMPLE_TYPES = ("biopsy", "cytology")
REQUEST_ACTION = "request_pathology"
FLAG_ACTION = "flag"


@dataclass(frozen=True)
class PendingResult:
    """A sample whose pathology report is awaited (or has come)."""

    study_id: str
    site_id: int
    instance: int
    sample_type: str
    sample_date: dt.date
    due: dt.date
    status: str  # scheduled (awaited) or done
    days_overdue: int

    @property
    def overdue(self) -> bool:
        return self.status == "scheduled" and self.days_overdue > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "instance": self.instance,
            "sample_type": self.sample_type,
            "sample_date": self.sample_date.isoformat(),
            "due": self.due.isoformat(),
            "status": self.status,
            "overdue": self.overdue,
            "days_overdue": self.days_overdue,
        }


def request_result(
    session: Session,
    *,
    subject: Subject,
    sample_type: str,
    sample_date: dt.date,
    actor: str,
    source_record_id: int | None = None,
) -> Event:
    """Create the pending result of a sample (an audited Event due after the protocol's days)."""
    if sample_type not in SAMPLE_TYPES:
        raise ValidationError(
            "unknown sample",
            problems=[Problem("sample_type", f"must be one of: {', '.join(SAMPLE_TYPES)}")],
        )
    settings = procedure_settings(records.subject_protocol(subject)).pathology
    top = session.scalar(
        select(func.max(Event.instance)).where(
            Event.subject_id == subject.id, Event.event_key == settings.event
        )
    )
    due = sample_date + dt.timedelta(days=settings.due_days)
    event = Event(
        subject_id=subject.id,
        event_key=settings.event,
        instance=(top or 0) + 1,
        scheduled_on=due,
        window_start=sample_date,
        window_end=due,
        status="scheduled",
    )
    session.add(event)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=REQUEST_ACTION,
        entity_type="event",
        entity_id=event.id,
        after={
            "event": f"{event.event_key}#{event.instance}",
            "sample_type": sample_type,
            "sample_date": sample_date.isoformat(),
            "due": due.isoformat(),
            "source_record": source_record_id,
        },
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    return event


def _request_details(session: Session, event_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    ids = [str(i) for i in event_ids]
    if not ids:
        return {}
    rows = session.scalars(
        select(AuditEntry).where(
            AuditEntry.entity_type == "event",
            AuditEntry.action == REQUEST_ACTION,
            AuditEntry.entity_id.in_(ids),
        )
    )
    return {int(e.entity_id): dict(e.after or {}) for e in rows}


def pending_results(
    session: Session,
    *,
    today: dt.date,
    site_ids: Iterable[int] | None = None,
    subject: Subject | None = None,
    include_done: bool = False,
) -> list[PendingResult]:
    """Return awaited pathology results (oldest due first); ``overdue`` ones are past due."""
    stmt = (
        select(Event, Subject)
        .join(Subject, Subject.id == Event.subject_id)
        .where(Event.event_key == "pathology_result")
        .order_by(Event.scheduled_on, Subject.study_id, Event.instance)
    )
    if not include_done:
        stmt = stmt.where(Event.status == "scheduled")
    if site_ids is not None:
        stmt = stmt.where(Subject.site_id.in_(list(site_ids)))
    if subject is not None:
        stmt = stmt.where(Event.subject_id == subject.id)
    rows = [(row[0], row[1]) for row in session.execute(stmt)]
    details = _request_details(session, (e.id for e, _ in rows))
    out: list[PendingResult] = []
    for event, owner in rows:
        info = details.get(event.id, {})
        due = event.scheduled_on or today
        sample = event.window_start or due
        out.append(
            PendingResult(
                study_id=owner.study_id,
                site_id=owner.site_id,
                instance=event.instance,
                sample_type=str(info.get("sample_type", "")),
                sample_date=sample,
                due=due,
                status=event.status,
                days_overdue=max(0, (today - due).days) if event.status == "scheduled" else 0,
            )
        )
    return out


def overdue_results(
    session: Session, *, today: dt.date, site_ids: Iterable[int] | None = None
) -> list[PendingResult]:
    """Return the awaited results whose due date has passed."""
    return [r for r in pending_results(session, today=today, site_ids=site_ids) if r.overdue]


@dataclass(frozen=True)
class ResultOutcome:
    record: FormRecord
    flagged: bool


def enter_result(
    session: Session,
    *,
    subject: Subject,
    instance: int,
    data: Mapping[str, Any],
    actor: str,
    vault: Vault | None = None,
    today: dt.date | None = None,
) -> ResultOutcome:
    """Save the pathology report of a pending sample, closing it; flag a worrying result.

    A result listed in the protocol's ``flag_results`` (suspicious, malignant) opens a query on
    the result for investigator review and an audited ``flag`` on the subject; the subject's
    pre-session checks then block further lavage.
    """
    settings = procedure_settings(records.subject_protocol(subject)).pathology
    event = session.scalar(
        select(Event).where(
            Event.subject_id == subject.id,
            Event.event_key == settings.event,
            Event.instance == instance,
        )
    )
    if event is None:
        raise NotFound(f"no pending pathology result #{instance} for {subject.study_id}")
    details = _request_details(session, [event.id]).get(event.id, {})
    merged = dict(data)
    if details.get("sample_type") and not merged.get("sample_type"):
        merged["sample_type"] = details["sample_type"]
    if details.get("sample_date") and not merged.get("sample_date"):
        merged["sample_date"] = details["sample_date"]
    record = forms.save_form(
        session,
        subject=subject,
        form_key=settings.form,
        data=merged,
        actor=actor,
        event_key=settings.event,
        event_instance=instance,
        vault=vault,
        today=today,
    )
    event.status = "done"
    session.flush()
    flagged = record.data.get("result") in settings.flag_results
    if flagged:
        queries.open_query(
            session,
            record=record,
            field="result",
            text=(
                f"{record.data['result'].capitalize()} pathology result: investigator review "
                "needed; the subject is excluded from lavage therapy"
            ),
            actor=actor,
            origin="rule",
        )
        audit.record(
            session,
            actor=actor,
            action=FLAG_ACTION,
            entity_type="subject",
            entity_id=subject.id,
            after={"flag": "pathology", "result": record.data["result"], "record": record.id},
            reason="suspicious or malignant pathology: investigator review, no further lavage",
            subject_study_id=subject.study_id,
            site_id=subject.site_id,
        )
    return ResultOutcome(record, flagged)


def is_flagged(session: Session, subject: Subject) -> bool:
    """Return True when any of the subject's pathology results is suspicious or malignant."""
    protocol = records.subject_protocol(subject)
    try:
        settings = procedure_settings(protocol).pathology
    except ProtocolError:  # a protocol without procedure rules has no pathology flag
        return False
    return any(
        r.data.get("result") in settings.flag_results
        for r in records.subject_records(session, subject, settings.form)
    )
