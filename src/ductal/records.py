"""The records service: screen, enrol, schedule and save forms — the one way study data is written.

Every function takes an explicit session and keyword-only arguments, validates everything before
it writes, and appends its audit entries in the caller's transaction: either the change and its
audit entries are stored together, or neither is.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Row, Select, Table, bindparam, select
from sqlalchemy.orm import Session

from ductal import audit
from ductal.errors import Conflict, NotFound, Problem, ValidationError
from ductal.models import (
    Event,
    FormRecord,
    Identity,
    ProtocolVersion,
    Site,
    Subject,
    utcnow,
)
from ductal.protocols.model import Protocol, ScheduledEvent
from ductal.protocols.validation import eligibility, validate_form_data
from ductal.vault import Vault

_PROTOCOL_CACHE: dict[str, Protocol] = {}
REQUIRED_MESSAGE = "is required"

# Which statuses a subject may move to from each status.
_TRANSITIONS: dict[str, set[str]] = {
    "screened": {"eligible", "ineligible", "withdrawn"},
    "eligible": {"consented", "ineligible", "withdrawn"},
    "ineligible": {"eligible", "consented"},
    "consented": {"enrolled", "withdrawn", "ineligible"},
    "enrolled": {"completed", "withdrawn", "lost_to_follow_up"},
    "completed": set(),
    "withdrawn": set(),
    "lost_to_follow_up": {"enrolled", "completed"},
}


# --- protocols -----------------------------------------------------------------------------


def register_protocol(session: Session, *, protocol: Protocol, actor: str) -> ProtocolVersion:
    """Store ``protocol`` as a version (idempotent) and return it.

    Re-registering the same version with a different definition is refused: a changed protocol
    needs a new version number.
    """
    digest = protocol.sha256()
    existing = session.scalar(
        select(ProtocolVersion).where(
            ProtocolVersion.protocol_id == protocol.id,
            ProtocolVersion.version == protocol.version,
        )
    )
    if existing is not None:
        if existing.sha256 != digest:
            raise Conflict(
                f"protocol {protocol.id} version {protocol.version} is already stored with a "
                "different definition; give the changed protocol a new version"
            )
        return existing
    pv = ProtocolVersion(
        protocol_id=protocol.id,
        version=protocol.version,
        definition=protocol.model_dump(mode="json"),
        sha256=digest,
    )
    session.add(pv)
    session.flush()
    _PROTOCOL_CACHE[digest] = protocol
    audit.record(
        session,
        actor=actor,
        action="register",
        entity_type="protocol",
        entity_id=pv.id,
        after={"protocol": protocol.id, "version": protocol.version, "sha256": digest},
    )
    return pv


def protocol_of(pv: ProtocolVersion) -> Protocol:
    """Return the protocol stored in a protocol version (parsed once per definition)."""
    return _cached_protocol(pv.sha256, lambda: pv.definition)


def _cached_protocol(sha256: str, definition: Callable[[], Any]) -> Protocol:
    cached = _PROTOCOL_CACHE.get(sha256)
    if cached is None:
        cached = Protocol.model_validate(definition())
        _PROTOCOL_CACHE[sha256] = cached
    return cached


def latest_protocol_version(session: Session, protocol_id: str) -> ProtocolVersion:
    """Return the most recently registered version of ``protocol_id``."""
    pv = session.scalar(
        select(ProtocolVersion)
        .where(ProtocolVersion.protocol_id == protocol_id)
        .order_by(ProtocolVersion.id.desc())
        .limit(1)
    )
    if pv is None:
        raise NotFound(f"protocol {protocol_id!r} is not registered in this database")
    return pv


def subject_protocol(subject: Subject) -> Protocol:
    """Return the protocol version the subject was screened under."""
    return protocol_of(subject.protocol_version)


_DEFINITION_OF = select(ProtocolVersion.definition).where(
    ProtocolVersion.id == bindparam("version_id")
)


def protocol_by_digest(session: Session, version_id: int, sha256: str) -> Protocol:
    """Return protocol version ``version_id`` (``sha256`` its digest), read only on a cache miss."""
    conn = session.connection()
    return _cached_protocol(
        sha256, lambda: conn.execute(_DEFINITION_OF, {"version_id": version_id}).scalar_one()
    )


class Unread(enum.Enum):
    """Marks a value that was not read from the database."""

    UNREAD = "unread"


UNREAD = Unread.UNREAD


@dataclass(frozen=True)
class Confirmation:
    """A SQL condition (in the database's dialect) that must still hold when a save stores.

    ``sql`` is a boolean SQL expression over the bind parameters in ``params`` (whose names
    should not clash with a statement's own: prefix them).
    """

    sql: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class SubjectFacts:
    """What writing a subject's data needs to know about the subject, without an ORM object.

    Built from a loaded :class:`Subject` (:meth:`of`) or read with one Core statement (the web
    API's form save). ``identity`` is the stored identity ciphertext when it was read with the
    subject, ``None`` when there is none, and :data:`UNREAD` when it was not read.

    ``unconfirmed`` is set on facts read by an earlier transaction (the web API keeps them from
    one save of a script to its next): a save given such facts stores its record only if these
    facts, and that condition, still hold as it stores it (checked by the storing statement on
    PostgreSQL, in the storing transaction on SQLite), and otherwise raises
    :class:`ductal.forms.Unconfirmed` having stored nothing.
    """

    id: int
    study_id: str
    site_id: int
    status: str
    arm: str | None
    enrolled_on: dt.date | None
    protocol_version_id: int
    protocol: Protocol
    identity: bytes | Unread | None = None
    unconfirmed: Confirmation | None = None

    def confirmation_params(self) -> dict[str, Any]:
        """Return the bind parameters of a check that unconfirmed facts still hold: the
        condition's own, the subject's id and each fact as ``f_*``."""
        if self.unconfirmed is None or self.identity is UNREAD:
            raise ValueError("unconfirmed facts, with the identity they were read with, are needed")
        return {
            **self.unconfirmed.params,
            "subject_id": self.id,
            "f_study": self.study_id,
            "f_site": self.site_id,
            "f_status": self.status,
            "f_arm": self.arm,
            "f_enrolled": self.enrolled_on,
            "f_version": self.protocol_version_id,
            "f_identity": self.identity,
        }

    @classmethod
    def of(cls, subject: Subject) -> SubjectFacts:
        return cls(
            id=subject.id,
            study_id=subject.study_id,
            site_id=subject.site_id,
            status=subject.status,
            arm=subject.arm,
            enrolled_on=subject.enrolled_on,
            protocol_version_id=subject.protocol_version_id,
            protocol=subject_protocol(subject),
            identity=UNREAD,
        )


# the columns of :class:`SubjectFacts` (labelled, so that another statement can carry them
# beside its own: the web API reads a token and the subject it asks for together)
FACTS_COLUMNS = (
    Subject.id.label("subject_id"),
    Subject.study_id.label("subject_study_id"),
    Subject.site_id.label("subject_site_id"),
    Subject.status.label("subject_status"),
    Subject.arm.label("subject_arm"),
    Subject.enrolled_on.label("subject_enrolled_on"),
    Subject.protocol_version_id.label("subject_protocol_version_id"),
    ProtocolVersion.sha256.label("subject_protocol_sha256"),
    Identity.ciphertext.label("subject_identity"),
)


def _with_version_and_identity(stmt: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    return stmt.outerjoin(
        ProtocolVersion, ProtocolVersion.id == Subject.protocol_version_id
    ).outerjoin(Identity, Identity.subject_id == Subject.id)


def join_facts(stmt: Select[*tuple[Any, ...]]) -> Select[*tuple[Any, ...]]:
    """Return ``stmt`` with :data:`FACTS_COLUMNS` of subject ``:study_id`` (NULL if none)."""
    return _with_version_and_identity(
        stmt.add_columns(*FACTS_COLUMNS).outerjoin(
            Subject, Subject.study_id == bindparam("study_id")
        )
    )


_FACTS_BY_STUDY_ID = _with_version_and_identity(
    select(*FACTS_COLUMNS).select_from(Subject).where(Subject.study_id == bindparam("study_id"))
)


def facts_from_row(session: Session, row: Row[*tuple[Any, ...]]) -> SubjectFacts | None:
    """Return the :class:`SubjectFacts` in a row holding :data:`FACTS_COLUMNS`, None if NULL."""
    if row.subject_id is None:
        return None
    return SubjectFacts(
        id=row.subject_id,
        study_id=row.subject_study_id,
        site_id=row.subject_site_id,
        status=row.subject_status,
        arm=row.subject_arm,
        enrolled_on=row.subject_enrolled_on,
        protocol_version_id=row.subject_protocol_version_id,
        protocol=protocol_by_digest(
            session, row.subject_protocol_version_id, row.subject_protocol_sha256
        ),
        identity=row.subject_identity,
    )


def subject_facts(session: Session, study_id: str) -> SubjectFacts | None:
    """Return the facts of subject ``study_id`` (identity ciphertext included) in one statement."""
    row = session.connection().execute(_FACTS_BY_STUDY_ID, {"study_id": study_id}).first()
    return None if row is None else facts_from_row(session, row)


def facts_of(subject: Subject | SubjectFacts) -> SubjectFacts:
    """Return ``subject`` as :class:`SubjectFacts`."""
    return subject if isinstance(subject, SubjectFacts) else SubjectFacts.of(subject)


# --- subjects ------------------------------------------------------------------------------


def get_subject(session: Session, study_id: str) -> Subject:
    """Return the subject with ``study_id``."""
    subject = session.scalar(select(Subject).where(Subject.study_id == study_id.strip()))
    if subject is None:
        raise NotFound(f"no subject {study_id!r}")
    return subject


def list_subjects(
    session: Session,
    *,
    protocol_id: str | None = None,
    site_ids: Iterable[int] | None = None,
    status: str | None = None,
) -> list[Subject]:
    """Return subjects ordered by study id, filtered as asked."""
    stmt = select(Subject).order_by(Subject.protocol_id, Subject.study_id)
    if protocol_id is not None:
        stmt = stmt.where(Subject.protocol_id == protocol_id)
    if site_ids is not None:
        stmt = stmt.where(Subject.site_id.in_(list(site_ids)))
    if status is not None:
        stmt = stmt.where(Subject.status == status)
    return list(session.scalars(stmt))


def _next_study_id(session: Session, protocol: Protocol) -> str:
    prefix = f"{protocol.study_id_prefix}-"
    ids = session.scalars(select(Subject.study_id).where(Subject.study_id.like(f"{prefix}%")))
    numbers = [int(m.group(1)) for s in ids if (m := re.fullmatch(rf"{prefix}(\d+)", s))]
    return f"{prefix}{max(numbers, default=0) + 1:04d}"


def _subject_state(subject: Subject) -> dict[str, Any]:
    return {
        "study_id": subject.study_id,
        "protocol": subject.protocol_id,
        "site_id": subject.site_id,
        "arm": subject.arm,
        "stratum": subject.stratum,
        "status": subject.status,
        "status_reason": subject.status_reason,
        "screened_on": subject.screened_on,
        "enrolled_on": subject.enrolled_on,
    }


def _audit_subject(
    session: Session,
    subject: Subject,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None,
    reason: str | None = None,
) -> None:
    after = _subject_state(subject)
    if before is not None:
        changed = {k for k in after if after[k] != before.get(k)}
        before = {k: before[k] for k in changed}
        after = {k: after[k] for k in changed}
    audit.record(
        session,
        actor=actor,
        action=action,
        entity_type="subject",
        entity_id=subject.id,
        before=before,
        after=after,
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )


def screen(
    session: Session,
    *,
    protocol_id: str,
    site: Site,
    screening: Mapping[str, Any],
    actor: str,
    identity: Mapping[str, Any] | None = None,
    vault: Vault | None = None,
    study_id: str | None = None,
    today: dt.date | None = None,
) -> Subject:
    """Screen a new patient: store the screening form, judge eligibility, return the subject.

    The subject gets a pseudonymous study id (``LAV-0001``…) unless ``study_id`` is given, and
    ends as ``ineligible`` (with the reasons), ``eligible``, or ``consented`` when the screening
    form records signed consent.
    """
    pv = latest_protocol_version(session, protocol_id)
    protocol = protocol_of(pv)
    form = protocol.form(protocol.screening_form)
    context: dict[str, Any] = {}
    if identity and identity.get("date_of_birth"):
        context["date_of_birth"] = identity["date_of_birth"]
    clean, problems = validate_form_data(form, screening, context=context, today=today)
    if identity is not None and vault is None:
        problems.append(Problem("identity", "cannot be stored without the identity vault"))
    if problems:
        raise ValidationError(f"screening form has {len(problems)} problem(s)", problems=problems)
    audit.lock_chain(session)
    if study_id is not None:
        study_id = study_id.strip()
        if session.scalar(select(Subject.id).where(Subject.study_id == study_id)) is not None:
            raise Conflict(f"study id {study_id!r} is already in use")
    else:
        study_id = _next_study_id(session, protocol)
    screened_on = parse_date(clean.get("screening_date")) or (today or dt.date.today())
    subject = Subject(
        study_id=study_id,
        protocol_id=protocol.id,
        protocol_version_id=pv.id,
        site_id=site.id,
        status="screened",
        screened_on=screened_on,
    )
    session.add(subject)
    session.flush()
    subject.protocol_version = pv
    _audit_subject(session, subject, actor=actor, action="screen", before=None)
    if identity is not None and vault is not None:
        set_identity(session, subject=subject, identity=identity, vault=vault, actor=actor)
    screening_event = _screening_event(protocol)
    event = _get_or_create_event(session, subject, screening_event, 1)
    event.occurred_on = screened_on
    event.status = "done"
    insert_record(
        session,
        subject=SubjectFacts.of(subject),
        event_id=event.id,
        event_key=event.event_key,
        form_key=form.key,
        instance=1,
        data=clean,
        status="complete",
        actor=actor,
    )
    _judge_eligibility(session, subject=subject, protocol=protocol, data=clean, actor=actor)
    return subject


def _screening_event(protocol: Protocol) -> ScheduledEvent:
    for event in protocol.schedule:
        if protocol.screening_form in event.forms and event.kind == "screening":
            return event
    for event in protocol.schedule:
        if protocol.screening_form in event.forms:
            return event
    raise NotFound(f"protocol {protocol.id} has no event for its screening form")


def _judge_eligibility(
    session: Session, *, subject: Subject, protocol: Protocol, data: Mapping[str, Any], actor: str
) -> None:
    result = eligibility(protocol, data)
    before = _subject_state(subject)
    if not result.eligible:
        subject.status = "ineligible"
        subject.status_reason = "; ".join(message for _key, message in result.failed)
    elif data.get("consent_signed") == 1:
        subject.status = "consented"
        subject.status_reason = None
    else:
        subject.status = "eligible"
        subject.status_reason = None
    if subject.status != before["status"] or subject.status_reason != before["status_reason"]:
        session.flush()
        _audit_subject(session, subject, actor=actor, action="eligibility", before=before)


def change_status(
    session: Session, *, subject: Subject, status: str, actor: str, reason: str
) -> Subject:
    """Move a subject to ``status`` (withdrawn, lost to follow-up, completed, …) with a reason."""
    allowed = _TRANSITIONS.get(subject.status, set())
    if status not in allowed:
        raise Conflict(
            f"subject {subject.study_id} is {subject.status}; it cannot become {status}"
            + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
        )
    if not reason.strip():
        raise ValidationError("a reason is required", problems=[Problem("reason", "is required")])
    before = _subject_state(subject)
    subject.status = status
    subject.status_reason = reason
    session.flush()
    _audit_subject(session, subject, actor=actor, action="status", before=before, reason=reason)
    return subject


def enrol(
    session: Session,
    *,
    subject: Subject,
    actor: str,
    enrolled_on: dt.date | None = None,
    arm: str | None = None,
) -> Subject:
    """Enrol a consented subject and schedule the visits anchored on enrolment.

    A single-arm protocol assigns its only arm; a randomised one leaves the arm to
    randomisation unless ``arm`` is given (e.g. when importing an existing study).
    """
    if subject.status != "consented":
        detail = f": {subject.status_reason}" if subject.status_reason else ""
        raise Conflict(f"subject {subject.study_id} is {subject.status}{detail}; cannot enrol")
    protocol = subject_protocol(subject)
    enrolled_on = enrolled_on or dt.date.today()
    if subject.screened_on and enrolled_on < subject.screened_on:
        raise ValidationError(
            "bad enrolment date",
            problems=[Problem("enrolled_on", "is before the screening date")],
        )
    if arm is not None:
        try:
            protocol.arm(arm)
        except KeyError:
            raise ValidationError(
                "unknown arm",
                problems=[
                    Problem("arm", f"must be one of: {', '.join(a.key for a in protocol.arms)}")
                ],
            ) from None
    elif not protocol.is_randomised:
        arm = protocol.arms[0].key
    before = _subject_state(subject)
    subject.status = "enrolled"
    subject.status_reason = None
    subject.enrolled_on = enrolled_on
    subject.arm = arm
    session.flush()
    _audit_subject(session, subject, actor=actor, action="enrol", before=before)
    schedule_events(
        session, subject=subject, anchor="enrolment", anchor_date=enrolled_on, actor=actor
    )
    return subject


def assign_arm(
    session: Session, *, subject: Subject, arm: str, stratum: str | None, actor: str
) -> Subject:
    """Record the arm a subject was randomised to and schedule that arm's visits."""
    if subject.arm is not None:
        raise Conflict(f"subject {subject.study_id} already has arm {subject.arm}")
    if subject.status != "enrolled" or subject.enrolled_on is None:
        raise Conflict(f"subject {subject.study_id} is {subject.status}; enrol before randomising")
    before = _subject_state(subject)
    subject.arm = arm
    subject.stratum = stratum
    session.flush()
    _audit_subject(session, subject, actor=actor, action="randomise", before=before)
    schedule_events(
        session,
        subject=subject,
        anchor="enrolment",
        anchor_date=subject.enrolled_on,
        actor=actor,
    )
    return subject


# --- identity ------------------------------------------------------------------------------


def set_identity(
    session: Session,
    *,
    subject: Subject,
    identity: Mapping[str, Any],
    vault: Vault,
    actor: str,
    reason: str | None = None,
) -> None:
    """Store the subject's direct identifiers, encrypted; the audit names fields, never values."""
    clean = dict(identity)
    dob = clean.get("date_of_birth")
    if dob is not None:
        parsed = parse_date(dob)
        if parsed is None:
            raise ValidationError(
                "bad identity", problems=[Problem("date_of_birth", "must be a date YYYY-MM-DD")]
            )
        if parsed > dt.date.today():
            raise ValidationError(
                "bad identity", problems=[Problem("date_of_birth", "is in the future")]
            )
        clean["date_of_birth"] = parsed.isoformat()
    ciphertext = vault.encrypt(clean)
    existing = session.scalar(select(Identity).where(Identity.subject_id == subject.id))
    if existing is not None and not (reason or "").strip():
        raise ValidationError(
            "a reason is required to change identifiers",
            problems=[Problem("reason", "is required")],
        )
    if existing is None:
        session.add(Identity(subject_id=subject.id, ciphertext=ciphertext))
    else:
        existing.ciphertext = ciphertext
        existing.updated_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="update" if existing else "create",
        entity_type="identity",
        entity_id=subject.id,
        after={"fields": sorted(k for k, v in clean.items() if v not in (None, ""))},
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )


_IDENTITY_OF = select(Identity).where(Identity.subject_id == bindparam("subject_id"))


def get_identity(session: Session, *, subject: Subject, vault: Vault) -> dict[str, Any]:
    """Return the subject's decrypted identifiers (empty when none are stored)."""
    row = session.scalar(_IDENTITY_OF, {"subject_id": subject.id})
    return {} if row is None else vault.decrypt(row.ciphertext)


# --- events --------------------------------------------------------------------------------


def _get_or_create_event(
    session: Session, subject: Subject, spec: ScheduledEvent, instance: int
) -> Event:
    event = session.scalar(
        select(Event).where(
            Event.subject_id == subject.id,
            Event.event_key == spec.key,
            Event.instance == instance,
        )
    )
    if event is None:
        event = Event(subject_id=subject.id, event_key=spec.key, instance=instance)
        session.add(event)
        session.flush()
    return event


def schedule_events(
    session: Session,
    *,
    subject: Subject | SubjectFacts,
    anchor: str,
    anchor_date: dt.date,
    actor: str,
) -> list[Event]:
    """Create the subject's visits anchored on ``anchor`` (idempotent) and return the new ones."""
    protocol = facts_of(subject).protocol
    created: list[Event] = []
    for spec in protocol.schedule:
        if spec.anchor != anchor or spec.kind in ("screening", "unscheduled"):
            continue
        if spec.arms and subject.arm not in spec.arms:
            continue
        count = spec.repeat.count if spec.repeat else 1
        every = spec.repeat.every_days if spec.repeat else 0
        for i in range(1, count + 1):
            exists = session.scalar(
                select(Event.id).where(
                    Event.subject_id == subject.id,
                    Event.event_key == spec.key,
                    Event.instance == i,
                )
            )
            if exists is not None:
                continue
            day = anchor_date + dt.timedelta(days=spec.day + (i - 1) * every)
            event = Event(
                subject_id=subject.id,
                event_key=spec.key,
                instance=i,
                scheduled_on=day,
                window_start=day - dt.timedelta(days=spec.window_before),
                window_end=day + dt.timedelta(days=spec.window_after),
                status="scheduled",
            )
            session.add(event)
            created.append(event)
    session.flush()
    if created:
        audit.record(
            session,
            actor=actor,
            action="schedule",
            entity_type="subject",
            entity_id=subject.id,
            after={
                "anchor": anchor,
                "anchor_date": anchor_date,
                "events": [f"{e.event_key}#{e.instance}@{e.scheduled_on}" for e in created],
            },
            subject_study_id=subject.study_id,
            site_id=subject.site_id,
        )
    return created


def subject_events(session: Session, subject: Subject) -> list[Event]:
    """Return the subject's events in schedule order."""
    return list(
        session.scalars(
            select(Event)
            .where(Event.subject_id == subject.id)
            .order_by(Event.scheduled_on.is_(None), Event.scheduled_on, Event.id)
        )
    )


# --- form records --------------------------------------------------------------------------


def parse_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


_RECORDS_TABLE = cast(Table, FormRecord.__table__)
_INSERT_RECORD = _RECORDS_TABLE.insert().returning(_RECORDS_TABLE.c.id)


def created_entry(
    form_key: str, event_key: str, instance: Any, data: dict[str, Any]
) -> dict[str, Any]:
    """Return what the audit entry of a new form record says it holds."""
    return {"form": form_key, "event": event_key, "instance": instance, **data}


def insert_record(
    session: Session,
    *,
    subject: SubjectFacts,
    event_id: int,
    event_key: str,
    form_key: str,
    instance: int,
    data: dict[str, Any],
    status: str,
    actor: str,
    reason: str | None = None,
) -> tuple[int, dt.datetime]:
    """Store a new, already validated form record and its audit entry; return its id and time.

    One Core ``INSERT ... RETURNING id``: no ORM object is made (:func:`ductal.forms.save_form`
    makes one for callers that want it).
    """
    now = utcnow()
    values: dict[str, Any] = {
        "subject_id": subject.id,
        "event_id": event_id,
        "form_key": form_key,
        "instance": instance,
        "data": data,
        "status": status,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    record_id = int(session.connection().execute(_INSERT_RECORD, values).scalar_one())
    audit.record(
        session,
        actor=actor,
        action="create",
        entity_type="form_record",
        entity_id=record_id,
        after=created_entry(form_key, event_key, instance, data),
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    return record_id, now


def delete_form(session: Session, *, record: FormRecord, actor: str, reason: str) -> None:
    """Delete a form record, keeping its last values in the audit trail."""
    if not reason.strip():
        raise ValidationError("a reason is required", problems=[Problem("reason", "is required")])
    if record.status in ("locked", "signed"):
        raise Conflict(f"form {record.form_key} is {record.status}; it cannot be deleted")
    subject = record.subject
    audit.lock_chain(session)
    audit.record(
        session,
        actor=actor,
        action="delete",
        entity_type="form_record",
        entity_id=record.id,
        before={"form": record.form_key, "instance": record.instance, **record.data},
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    session.delete(record)
    session.flush()


def subject_records(
    session: Session, subject: Subject, form_key: str | None = None
) -> list[FormRecord]:
    """Return the subject's form records (optionally of one form) in entry order."""
    stmt = select(FormRecord).where(FormRecord.subject_id == subject.id).order_by(FormRecord.id)
    if form_key is not None:
        stmt = stmt.where(FormRecord.form_key == form_key)
    return list(session.scalars(stmt))
