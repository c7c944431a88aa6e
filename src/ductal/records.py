"""The records service: screen, enrol, schedule and save forms — the one way study data is written.

Every function takes an explicit session and keyword-only arguments, validates everything before
it writes, and appends its audit entries in the caller's transaction: either the change and its
audit entries are stored together, or neither is.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.exc import StaleDataError

from ductal import audit
from ductal.errors import Conflict, NotFound, Problem, ValidationError
from ductal.models import (
    Event,
    FormRecord,
    Identity,
    ProtocolVersion,
    Signature,
    Site,
    Subject,
    utcnow,
)
from ductal.protocols.logic import parse as parse_expression
from ductal.protocols.model import FormDef, Protocol, ScheduledEvent
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
    cached = _PROTOCOL_CACHE.get(pv.sha256)
    if cached is None:
        cached = Protocol.model_validate(pv.definition)
        _PROTOCOL_CACHE[pv.sha256] = cached
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
    screened_on = _parse_date(clean.get("screening_date")) or (today or dt.date.today())
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
    _write_record(
        session,
        subject=subject,
        event=event,
        form=form,
        instance=1,
        clean=clean,
        status="complete",
        actor=actor,
        reason=None,
        record=None,
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
        parsed = _parse_date(dob)
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


def _event_and_record(
    session: Session,
    subject: Subject,
    spec: ScheduledEvent,
    event_instance: int,
    form_key: str,
    instance: int | None,
    *,
    repeating: bool,
) -> tuple[Event, FormRecord | None, int]:
    """Return the event (created if new), the saved record to change if any, and its instance.

    One statement reads the event together with, for a new instance of a repeating form, the
    highest instance saved so far, or else the record at the given instance.
    """
    params = {
        "subject_id": subject.id,
        "event_key": spec.key,
        "event_instance": event_instance,
        "form_key": form_key,
    }
    if repeating and instance is None:
        row = session.execute(_EVENT_AND_TOP_INSTANCE, params).first()
        if row is None:
            return _new_event(session, subject, spec, event_instance), None, 1
        return row[0], None, (row[1] or 0) + 1
    instance = instance or 1
    found = session.execute(_EVENT_AND_RECORD, {**params, "instance": instance}).first()
    if found is None:
        return _new_event(session, subject, spec, event_instance), None, instance
    return found[0], found[1], instance


# built once (statement construction costs more than running them)
_THE_EVENT = (
    Event.subject_id == bindparam("subject_id"),
    Event.event_key == bindparam("event_key"),
    Event.instance == bindparam("event_instance"),
)
_EVENT_AND_TOP_INSTANCE = select(
    Event,
    select(func.max(FormRecord.instance))
    .where(FormRecord.event_id == Event.id, FormRecord.form_key == bindparam("form_key"))
    .correlate(Event)
    .scalar_subquery(),
).where(*_THE_EVENT)
_EVENT_AND_RECORD = (
    select(Event, FormRecord)
    .outerjoin(
        FormRecord,
        (FormRecord.event_id == Event.id)
        & (FormRecord.form_key == bindparam("form_key"))
        & (FormRecord.instance == bindparam("instance")),
    )
    .where(*_THE_EVENT)
)


def _new_event(session: Session, subject: Subject, spec: ScheduledEvent, instance: int) -> Event:
    event = Event(subject_id=subject.id, event_key=spec.key, instance=instance)
    session.add(event)
    session.flush()
    return event


def schedule_events(
    session: Session, *, subject: Subject, anchor: str, anchor_date: dt.date, actor: str
) -> list[Event]:
    """Create the subject's visits anchored on ``anchor`` (idempotent) and return the new ones."""
    protocol = subject_protocol(subject)
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


def _parse_date(value: Any) -> dt.date | None:
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


def _event_spec_for(protocol: Protocol, form_key: str, event_key: str | None) -> ScheduledEvent:
    if event_key is not None:
        try:
            spec = protocol.event(event_key)
        except KeyError:
            raise ValidationError(
                "unknown event",
                problems=[Problem("event", f"{event_key!r} is not in the schedule")],
            ) from None
        if form_key not in spec.forms:
            raise ValidationError(
                "form not collected at this event",
                problems=[Problem("form", f"{form_key!r} is not collected at {event_key!r}")],
            )
        return spec
    candidates = [e for e in protocol.schedule if form_key in e.forms]
    if len(candidates) != 1:
        where = ", ".join(e.key for e in candidates) or "no event"
        raise ValidationError(
            "say which event",
            problems=[Problem("event", f"form {form_key!r} is collected at {where}")],
        )
    return candidates[0]


_FORM_NAMES: dict[int, tuple[FormDef, frozenset[str]]] = {}


def _names_used(form: FormDef) -> frozenset[str]:
    """Return every name the form's branching, calc and rule expressions refer to (cached)."""
    cached = _FORM_NAMES.get(id(form))
    if cached is not None and cached[0] is form:
        return cached[1]
    texts = [f.show_if for f in form.fields] + [f.calc for f in form.fields]
    texts += [r.expr for r in form.rules] + [r.when for r in form.rules]
    names: set[str] = set()
    for text in texts:
        if text:
            names |= parse_expression(text).fields
    result = frozenset(names)
    _FORM_NAMES[id(form)] = (form, result)
    return result


def validation_context(
    session: Session, subject: Subject, vault: Vault | None, form: FormDef | None = None
) -> dict[str, Any]:
    """Return the values visible to a form's rules beyond its own fields.

    Given the form, only what it can use is looked up: the date of birth (decrypted from the
    vault) when it has dates, the first session date when an expression names it.
    """
    context: dict[str, Any] = {}
    if subject.enrolled_on is not None:
        context["enrolment_date"] = subject.enrolled_on.isoformat()
    has_dates = form is None or any(f.type in ("date", "datetime") for f in form.fields)
    if vault is not None and has_dates:
        dob = get_identity(session, subject=subject, vault=vault).get("date_of_birth")
        if dob:
            context["date_of_birth"] = dob
    if form is None or "first_session_date" in _names_used(form):
        first = first_session_date(session, subject)
        if first is not None:
            context["first_session_date"] = first.isoformat()
    return context


def first_session_date(session: Session, subject: Subject) -> dt.date | None:
    """Return the date of the subject's first treatment session, if one has been recorded."""
    protocol = subject_protocol(subject)
    treatment_keys = [e.key for e in protocol.schedule if e.kind == "treatment"]
    if not treatment_keys:
        return None
    return session.scalar(
        select(func.min(Event.occurred_on)).where(
            Event.subject_id == subject.id,
            Event.event_key.in_(treatment_keys),
            Event.occurred_on.is_not(None),
        )
    )


def _occurred_on(form: FormDef, clean: Mapping[str, Any]) -> dt.date | None:
    for field in form.fields:
        if field.type == "date" and field.required:
            parsed = _parse_date(clean.get(field.key))
            if parsed is not None:
                return parsed
    return None


def save_form(
    session: Session,
    *,
    subject: Subject,
    form_key: str,
    data: Mapping[str, Any],
    actor: str,
    event_key: str | None = None,
    event_instance: int = 1,
    instance: int | None = None,
    expected_version: int | None = None,
    reason: str | None = None,
    allow_incomplete: bool = False,
    vault: Vault | None = None,
    today: dt.date | None = None,
) -> FormRecord:
    """Validate and save one form for a subject; return the stored record.

    A new record needs no version. Changing a saved record needs the version the caller edited
    (``expected_version``; a stale one is refused as a conflict) and, when any saved value
    changes, a ``reason``. All problems are reported at once and nothing is stored when there
    are any. With ``allow_incomplete`` missing required answers are tolerated and the record is
    stored as ``incomplete``.
    """
    protocol = subject_protocol(subject)
    try:
        form = protocol.form(form_key)
    except KeyError:
        raise ValidationError(
            "unknown form", problems=[Problem("form", f"{form_key!r} is not in {protocol.id}")]
        ) from None
    if subject.status not in ("enrolled", "completed") and form_key != protocol.screening_form:
        raise Conflict(f"subject {subject.study_id} is {subject.status}; enrol before data entry")
    spec = _event_spec_for(protocol, form_key, event_key)
    if spec.arms and subject.arm not in spec.arms:
        raise ValidationError(
            "form not for this arm",
            problems=[Problem("event", f"{spec.key!r} is only for arms {', '.join(spec.arms)}")],
        )
    context = validation_context(session, subject, vault, form)
    clean, problems = validate_form_data(form, data, context=context, today=today)
    missing = [p for p in problems if p.message == REQUIRED_MESSAGE]
    if allow_incomplete:
        problems = [p for p in problems if p.message != REQUIRED_MESSAGE]
    if problems:
        raise ValidationError(f"form {form_key} has {len(problems)} problem(s)", problems=problems)
    status = "incomplete" if missing else "complete"

    audit.lock_chain(session)
    event, record, instance = _event_and_record(
        session, subject, spec, event_instance, form_key, instance, repeating=form.repeating
    )
    occurred = _occurred_on(form, clean)
    was_first_treatment = spec.kind == "treatment" and first_session_date(session, subject) is None
    saved = _write_record(
        session,
        subject=subject,
        event=event,
        form=form,
        instance=instance,
        clean=clean,
        status=status,
        actor=actor,
        reason=reason,
        record=record,
        expected_version=expected_version,
    )
    if occurred is not None and event.occurred_on != occurred:
        event.occurred_on = occurred
        event.status = "done"
        session.flush()
    if was_first_treatment and occurred is not None:
        schedule_events(
            session, subject=subject, anchor="first_session", anchor_date=occurred, actor=actor
        )
    return saved


_RECORDS_TABLE = cast(Table, FormRecord.__table__)
_INSERT_RECORD = _RECORDS_TABLE.insert().returning(_RECORDS_TABLE.c.id)


def _write_record(
    session: Session,
    *,
    subject: Subject,
    event: Event,
    form: FormDef,
    instance: int,
    clean: dict[str, Any],
    status: str,
    actor: str,
    reason: str | None,
    record: FormRecord | None,
    expected_version: int | None = None,
) -> FormRecord:
    if record is None:
        now = utcnow()
        values: dict[str, Any] = {
            "subject_id": subject.id,
            "event_id": event.id,
            "form_key": form.key,
            "instance": instance,
            "data": clean,
            "status": status,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        # one Core INSERT ... RETURNING id, then the record joins the session as a loaded row
        # (no unit-of-work flush); its subject and event are the objects already loaded
        values["id"] = session.connection().execute(_INSERT_RECORD, values).scalar_one()
        record = FormRecord(**values, subject=subject, event=event)
        make_transient_to_detached(record)
        session.add(record)
        audit.record(
            session,
            actor=actor,
            action="create",
            entity_type="form_record",
            entity_id=record.id,
            after={"form": form.key, "event": event.event_key, "instance": instance, **clean},
            reason=reason,
            subject_study_id=subject.study_id,
            site_id=subject.site_id,
        )
        return record

    if expected_version is None:
        raise Conflict(
            f"form {form.key} is already saved (version {record.version}); "
            "edit it with the version you started from"
        )
    if expected_version != record.version:
        raise Conflict(
            f"form {form.key} was saved by someone else first (it is at version "
            f"{record.version}, you edited version {expected_version}); reload and try again"
        )
    if record.status == "locked":
        raise Conflict(f"form {form.key} is locked; ask a monitor to unlock it")
    old = dict(record.data)
    keys = sorted(set(old) | set(clean))
    before = {k: old.get(k) for k in keys if old.get(k) != clean.get(k)}
    after = {k: clean.get(k) for k in before}
    if not before:
        return record
    if not (reason or "").strip():
        raise ValidationError(
            "a reason is required to change saved data",
            problems=[Problem("reason", "is required to change saved data")],
        )
    record.data = clean
    record.status = status  # a change undoes verification and signing
    record.updated_at = utcnow()
    try:
        session.flush()
    except StaleDataError as exc:
        raise Conflict(f"form {form.key} was saved by someone else first; reload") from exc
    audit.record(
        session,
        actor=actor,
        action="update",
        entity_type="form_record",
        entity_id=record.id,
        before=before,
        after=after,
        reason=reason,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )
    if before:
        _void_signatures(session, record=record, subject=subject, actor=actor)
    return record


def _void_signatures(session: Session, *, record: FormRecord, subject: Subject, actor: str) -> None:
    live = session.scalars(
        select(Signature).where(
            Signature.form_record_id == record.id, Signature.voided_at.is_(None)
        )
    ).all()
    for signature in live:
        signature.voided_at = utcnow()
        signature.void_reason = "data changed after signing"
        audit.record(
            session,
            actor=actor,
            action="void_signature",
            entity_type="signature",
            entity_id=signature.id,
            before={"signer": signature.signer, "meaning": signature.meaning},
            reason=signature.void_reason,
            subject_study_id=subject.study_id,
            site_id=subject.site_id,
        )
    session.flush()


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
