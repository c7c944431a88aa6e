"""Form records: validate and save one form of a subject — the write path of all data entry.

A save is a handful of Core statements in the caller's transaction: the event together with the
record being changed (or the highest instance so far), the record's ``INSERT`` or version-checked
``UPDATE``, and its hash-chained audit entry. :func:`write_form` needs no ORM objects, so the
web API's form save, the busiest request there is, stays cheap; :func:`save_form` wraps it for
callers that hold ORM objects and want one back.

On PostgreSQL the event and record are read under a per-subject advisory lock, so two saves for
one subject never both take the same new instance; the audit chain's own lock is taken only
for the audit entry, which keeps the section every writer queues for short.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, NamedTuple, TypedDict, Unpack, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Table,
    bindparam,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.orm import QueryableAttribute, Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from ductal import audit, pg_save, sqlite_save
from ductal.errors import Conflict, Problem, ValidationError
from ductal.models import Event, FormRecord, Identity, Signature, Subject, utcnow
from ductal.protocols.logic import parse as parse_expression
from ductal.protocols.model import FormDef, Protocol, ScheduledEvent
from ductal.protocols.validation import validate_form_data
from ductal.records import (
    UNREAD,
    SubjectFacts,
    facts_of,
    insert_record,
    parse_date,
    schedule_events,
)
from ductal.vault import Vault

REQUIRED_MESSAGE = "is required"


@dataclass(frozen=True)
class SavedForm:
    """A form record as :func:`write_form` left it."""

    id: int
    subject_id: int
    event_id: int
    event_key: str
    event_instance: int
    form_key: str
    instance: int
    data: dict[str, Any]
    status: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    created: bool  # new in this call, so it has neither queries nor signatures yet


# --- what a form's rules may see ------------------------------------------------------------

_FORM_NAMES: dict[int, tuple[FormDef, frozenset[str]]] = {}


def _names_used(form: FormDef) -> frozenset[str]:
    """Return every name the form's branching, calc and rule expressions refer to (cached)."""
    cached = _FORM_NAMES.get(id(form))
    if cached is not None and cached[0] is form:
        return cached[1]
    texts = [f.show_if for f in form.fields] + [f.calc for f in form.fields]
    texts += [r.expr for r in form.rules] + [r.when for r in form.rules]
    names: set[str] = set()
    for expression in texts:
        if expression:
            names |= parse_expression(expression).fields
    result = frozenset(names)
    _FORM_NAMES[id(form)] = (form, result)
    return result


_CIPHERTEXT_OF = select(Identity.ciphertext).where(Identity.subject_id == bindparam("subject_id"))


def _identity(session: Session | None, facts: SubjectFacts, vault: Vault) -> dict[str, Any]:
    ciphertext = facts.identity
    if ciphertext is UNREAD:
        ciphertext = _reading(session).scalar(_CIPHERTEXT_OF, {"subject_id": facts.id})
    return {} if ciphertext is None else vault.decrypt(ciphertext)


def _reading(session: Session | None) -> Session:
    if session is None:
        raise ValueError("this needs a read, and no session was given")
    return session


def validation_context(
    session: Session | None,
    subject: Subject | SubjectFacts,
    vault: Vault | None,
    form: FormDef | None = None,
) -> dict[str, Any]:
    """Return the values visible to a form's rules beyond its own fields.

    Given the form, only what it can use is looked up: the date of birth (decrypted from the
    vault) when it has dates, the first session date when an expression names it. Without a
    session only what needs no read is (facts with their identity, a form not naming the
    first session's date).
    """
    facts = facts_of(subject)
    context: dict[str, Any] = {}
    if facts.enrolled_on is not None:
        context["enrolment_date"] = facts.enrolled_on.isoformat()
    has_dates = form is None or any(f.type in ("date", "datetime") for f in form.fields)
    if vault is not None and has_dates:
        dob = _identity(session, facts, vault).get("date_of_birth")
        if dob:
            context["date_of_birth"] = dob
    if form is None or "first_session_date" in _names_used(form):
        first = first_session_date(_reading(session), facts)
        if first is not None:
            context["first_session_date"] = first.isoformat()
    return context


def first_session_date(session: Session, subject: Subject | SubjectFacts) -> dt.date | None:
    """Return the date of the subject's first treatment session, if one has been recorded."""
    facts = facts_of(subject)
    treatment_keys = [e.key for e in facts.protocol.schedule if e.kind == "treatment"]
    if not treatment_keys:
        return None
    return session.scalar(
        select(func.min(Event.occurred_on)).where(
            Event.subject_id == facts.id,
            Event.event_key.in_(treatment_keys),
            Event.occurred_on.is_not(None),
        )
    )


# --- saving ----------------------------------------------------------------------------------


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


def _occurred_on(form: FormDef, clean: Mapping[str, Any]) -> dt.date | None:
    for field in form.fields:
        if field.type == "date" and field.required:
            parsed = parse_date(clean.get(field.key))
            if parsed is not None:
                return parsed
    return None


def write_form(
    session: Session,
    facts: SubjectFacts,
    *,
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
) -> SavedForm:
    """Validate and save one form for the subject ``facts`` describe; return what was stored.

    A new record needs no version. Changing a saved record needs the version the caller edited
    (``expected_version``; a stale one is refused as a conflict) and, when any saved value
    changes, a ``reason``. All problems are reported at once and nothing is stored when there
    are any. With ``allow_incomplete`` missing required answers are tolerated and the record is
    stored as ``incomplete``.
    """
    unconfirmed = facts.unconfirmed is not None
    if unconfirmed and audit.chain_lock_asked(session):  # its lock would precede the subject's
        raise Unconfirmed("this save cannot confirm facts read by another transaction")
    write = _validated(
        session, facts, form_key=form_key, data=data, actor=actor, event_key=event_key,
        event_instance=event_instance, expected_version=expected_version, reason=reason,
        allow_incomplete=allow_incomplete, vault=vault, today=today,
    )  # fmt: skip
    session.flush()  # the Core reads below must see what the caller has pending
    if unconfirmed:
        if session.get_bind().dialect.name != "postgresql":
            return PreparedInsert(write, instance).store(session.connection())
        saved = _insert_in_one_statement(session, write, instance)
        if saved is None:
            raise _not_confirmed(facts)
        return saved
    _lock_subject(session, facts.id)
    spec, occurred = write.spec, write.occurred
    was_first_treatment = spec.kind == "treatment" and first_session_date(session, facts) is None
    saved = None
    if expected_version is None and session.get_bind().dialect.name == "postgresql":
        # a new record, unless one is there already (then the general path says what to do)
        saved = _insert_in_one_statement(session, write, instance)
    if saved is None:
        saved = _save(session, write, instance, expected_version)
    if was_first_treatment and occurred is not None:
        schedule_events(
            session, subject=facts, anchor="first_session", anchor_date=occurred, actor=actor
        )
    return saved


def prepare_insert(
    facts: SubjectFacts,
    *,
    form_key: str,
    data: Mapping[str, Any],
    actor: str,
    **options: Unpack[SaveOptions],
) -> PreparedInsert:
    """Validate a new form for unconfirmed ``facts``; return it ready to store.

    Takes what :func:`write_form` takes and raises as it does, without reading anything (a
    version given, the save is not a new form: :class:`Unconfirmed`). On PostgreSQL a caller
    may run :attr:`PreparedInsert.statement` itself, on a connection with no transaction open
    (the web API runs it on its event loop): it confirms the facts and stores the form,
    committing as it ends, and :meth:`PreparedInsert.saved` turns its row into the record. On
    SQLite, :meth:`PreparedInsert.store` does both in the caller's transaction.
    """
    if facts.unconfirmed is None:
        raise ValueError("prepare_insert is for facts read by an earlier transaction")
    write = _validated(None, facts, form_key=form_key, data=data, actor=actor, **options)
    return PreparedInsert(write, options.get("instance"))


def _validated(
    session: Session | None,
    facts: SubjectFacts,
    *,
    form_key: str,
    data: Mapping[str, Any],
    actor: str,
    **options: Unpack[SaveOptions],
) -> _Write:
    """Check the form against the protocol and the subject; return the save to store.

    ``session`` may be None for unconfirmed facts: a save they qualify for reads nothing.
    """
    event_key, event_instance = options.get("event_key"), options.get("event_instance", 1)
    protocol = facts.protocol
    try:
        form = protocol.form(form_key)
    except KeyError:
        raise ValidationError(
            "unknown form", problems=[Problem("form", f"{form_key!r} is not in {protocol.id}")]
        ) from None
    if facts.status not in ("enrolled", "completed") and form_key != protocol.screening_form:
        raise Conflict(f"subject {facts.study_id} is {facts.status}; enrol before data entry")
    spec = _event_spec_for(protocol, form_key, event_key)
    if spec.arms and facts.arm not in spec.arms:
        raise ValidationError(
            "form not for this arm",
            problems=[Problem("event", f"{spec.key!r} is only for arms {', '.join(spec.arms)}")],
        )
    if facts.unconfirmed is not None:
        _check_confirmable(facts, form, spec, options.get("expected_version"))
    context = validation_context(session, facts, options.get("vault"), form)
    clean, problems = validate_form_data(form, data, context=context, today=options.get("today"))
    missing = [p for p in problems if p.message == REQUIRED_MESSAGE]
    if options.get("allow_incomplete", False):
        problems = [p for p in problems if p.message != REQUIRED_MESSAGE]
    if problems:
        raise ValidationError(f"form {form_key} has {len(problems)} problem(s)", problems=problems)
    status = "incomplete" if missing else "complete"
    occurred = _occurred_on(form, clean)
    reason = options.get("reason")
    return _Write(facts, spec, event_instance, form, clean, status, occurred, actor, reason)


def _instance_to_write(form: FormDef, instance: int | None) -> int | None:
    """Return the instance a new record takes: None for the next of a repeating form."""
    return None if form.repeating and instance is None else (instance or 1)


def _insert_statement(write: _Write, instance: int | None) -> pg_save.InsertStatement:
    facts, form = write.facts, write.form
    return pg_save.insert_statement(
        facts, event_key=write.spec.key, event_instance=write.event_instance, form_key=form.key,
        instance=_instance_to_write(form, instance),
        data=write.clean, status=write.status, day=write.occurred, actor=write.actor,
        reason=write.reason,
    )  # fmt: skip


class Unconfirmed(Exception):
    """Raised by :func:`write_form` given unconfirmed facts it did not confirm; nothing stored.

    Either the facts or the caller's condition no longer hold, a save of the same subject came
    first, the record exists already, or this save needs more than the one statement that can
    confirm them. The caller reads the facts afresh in its own transaction and saves again.
    """


def _not_confirmed(facts: SubjectFacts) -> Unconfirmed:
    return Unconfirmed(f"the facts of subject {facts.study_id} could not be confirmed")


def _check_confirmable(
    facts: SubjectFacts, form: FormDef, spec: ScheduledEvent, expected_version: int | None
) -> None:
    """Raise :class:`Unconfirmed` unless one statement can confirm ``facts`` and store the form.

    That is a new record (no version), outside a treatment visit (whose first session schedules
    the follow-up), of a form whose rules read nothing beyond the facts, which carry the
    identity they were read with.
    """
    if (
        expected_version is not None
        or spec.kind == "treatment"
        or "first_session_date" in _names_used(form)
        or facts.identity is UNREAD
    ):
        raise Unconfirmed("this save cannot confirm facts read by another transaction")


@dataclass(frozen=True)
class _Write:
    """One validated save, as the paths below store it."""

    facts: SubjectFacts
    spec: ScheduledEvent
    event_instance: int
    form: FormDef
    clean: dict[str, Any]
    status: str
    occurred: dt.date | None  # the visit's date, from the form
    actor: str
    reason: str | None

    def created(self, event_id: int, instance: int, record_id: int, now: dt.datetime) -> SavedForm:
        """Return the record this save has just inserted."""
        return self.saved(
            event_id, instance, record_id, self.clean, self.status, 1, now, now, created=True
        )

    def saved(
        self,
        event_id: int,
        instance: int,
        record_id: int,
        data: dict[str, Any],
        status: str,
        version: int,
        created_at: dt.datetime,
        updated_at: dt.datetime,
        *,
        created: bool,
    ) -> SavedForm:
        return SavedForm(
            id=record_id,
            subject_id=self.facts.id,
            event_id=event_id,
            event_key=self.spec.key,
            event_instance=self.event_instance,
            form_key=self.form.key,
            instance=instance,
            data=data,
            status=status,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            created=created,
        )


@dataclass(frozen=True)
class PreparedInsert:
    """A validated new form of unconfirmed facts, ready to store (see :func:`prepare_insert`)."""

    write: _Write
    instance: int | None  # as given: None takes the next instance of a repeating form

    @cached_property
    def statement(self) -> pg_save.InsertStatement:
        """PostgreSQL: the one statement that confirms the facts and stores the form."""
        return _insert_statement(self.write, self.instance)

    def saved(self, row: tuple[Any, ...] | None) -> SavedForm:
        """Return the record :attr:`statement` stored, from its row ``(id, event_id,
        instance)``; raise :class:`Unconfirmed` when it stored nothing."""
        if row is None:
            raise _not_confirmed(self.write.facts)
        record_id, event_id, instance = row
        return self.write.created(int(event_id), int(instance), int(record_id), self.statement.now)

    def store(self, conn: Connection) -> SavedForm:
        """SQLite: confirm the facts and store the form in ``conn``'s transaction (begun
        ``IMMEDIATE``); raise :class:`Unconfirmed`, having stored nothing, when they no longer
        hold or the record exists."""
        write, form = self.write, self.write.form
        stored = sqlite_save.insert_form(
            conn, write.facts, event_key=write.spec.key, event_instance=write.event_instance,
            form_key=form.key, instance=_instance_to_write(form, self.instance),
            data=write.clean, status=write.status, day=write.occurred, actor=write.actor,
            reason=write.reason,
        )  # fmt: skip
        if stored is None:
            raise _not_confirmed(write.facts)
        record_id, event_id, instance, now = stored
        return write.created(event_id, instance, record_id, now)


def _insert_in_one_statement(
    session: Session, write: _Write, instance: int | None
) -> SavedForm | None:
    """PostgreSQL: store a new record with one statement (:mod:`ductal.pg_save`); None when it
    stored nothing (the record exists, or unconfirmed facts did not hold)."""
    statement = _insert_statement(write, instance)
    row = session.connection().execute(audit.sql_text(statement.sql), statement.params).first()
    if row is None:
        return None
    audit.note_chain_locked(session)
    record_id, event_id, stored_instance = (int(value) for value in row)
    _expire(session, Event, event_id)
    return write.created(event_id, stored_instance, record_id, statement.now)


def _save(
    session: Session, write: _Write, instance: int | None, expected_version: int | None
) -> SavedForm:
    """Store the record statement by statement: read it (or the top instance), then insert it or
    change it, and date the visit."""
    event_id, occurred_before, row, new_instance = _event_and_record(
        session, write.facts, write.spec, write.event_instance, write.form.key, instance,
        repeating=write.form.repeating,
    )  # fmt: skip
    if row is None:
        saved = _insert(session, write, event_id, new_instance)
    else:
        saved = _update(session, write, event_id, new_instance, row, expected_version)
    occurred = write.occurred
    if occurred is not None and occurred_before != occurred:
        session.connection().execute(
            _EVENT_DONE, {"event_id": event_id, "day": occurred, "done": "done"}
        )
        _expire(session, Event, event_id)
    return saved


class SaveOptions(TypedDict, total=False):
    """The optional keywords of :func:`write_form`, which :func:`save_form` passes on."""

    event_key: str | None
    event_instance: int
    instance: int | None
    expected_version: int | None
    reason: str | None
    allow_incomplete: bool
    vault: Vault | None
    today: dt.date | None


def save_form(
    session: Session,
    *,
    subject: Subject,
    form_key: str,
    data: Mapping[str, Any],
    actor: str,
    **options: Unpack[SaveOptions],
) -> FormRecord:
    """Validate and save one form for a subject; return the stored record (:func:`write_form`)."""
    saved = write_form(
        session, SubjectFacts.of(subject), form_key=form_key, data=data, actor=actor, **options
    )
    if not saved.created:
        _expire(session, FormRecord, saved.id)
        return session.get_one(FormRecord, saved.id)
    # the new row joins the session as loaded (no unit-of-work flush, nothing read back)
    record = FormRecord(
        id=saved.id,
        subject_id=saved.subject_id,
        event_id=saved.event_id,
        form_key=saved.form_key,
        instance=saved.instance,
        data=saved.data,
        status=saved.status,
        version=saved.version,
        created_at=saved.created_at,
        updated_at=saved.updated_at,
        subject=subject,
    )
    make_transient_to_detached(record)
    session.add(record)
    return record


# --- the statements (built once: constructing them costs more than running them) --------------

_PG_SUBJECT_LOCKS = pg_save.SUBJECT_LOCKS
_PG_LOCK_SUBJECT = text(
    "SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:subject_id AS integer))"
)


_SUBJECT_LOCKED = "ductal.forms.subject_locked"  # session.info: (transaction, subject id)


def subject_lock_column(
    subject_id: ColumnElement[int] | QueryableAttribute[int],
) -> ColumnElement[Any]:
    """Return a column that takes a subject's save lock within another PostgreSQL statement.

    It must be the transaction's first statement (no chain lock asked yet), and the caller
    then calls :func:`note_subject_locked`. The reads of the save come in later statements,
    which see everything committed before the lock was granted.
    """
    space = literal(_PG_SUBJECT_LOCKS, Integer)
    return func.pg_advisory_xact_lock(space, subject_id).label("subject_locked")


def note_subject_locked(session: Session, subject_id: int) -> None:
    """Record that this transaction holds ``subject_id``'s save lock (see above)."""
    if not session.in_nested_transaction():
        session.info[_SUBJECT_LOCKED] = (session.get_transaction(), subject_id)


def _lock_subject(session: Session, subject_id: int) -> None:
    """On PostgreSQL, serialise saves for one subject until the transaction ends.

    A transaction that has already asked for the audit chain's lock (which serialises every
    writer) takes that one instead, so locks are always taken subject first, chain second, and
    two transactions never wait for each other in a circle. SQLite needs nothing: every
    transaction there begins IMMEDIATE.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    if audit.chain_lock_asked(session):
        audit.lock_chain(session)  # keep to one order: once the chain's lock, no subject lock
        return
    if session.info.get(_SUBJECT_LOCKED) == (session.get_transaction(), subject_id):
        return  # taken with the transaction's first statement
    session.connection().execute(
        _PG_LOCK_SUBJECT, {"space": _PG_SUBJECT_LOCKS, "subject_id": subject_id}
    )


_EVENTS = cast(Table, Event.__table__)
_RECORDS = cast(Table, FormRecord.__table__)
_SIGNATURES = cast(Table, Signature.__table__)
_THE_EVENT = (
    _EVENTS.c.subject_id == bindparam("subject_id"),
    _EVENTS.c.event_key == bindparam("event_key"),
    _EVENTS.c.instance == bindparam("event_instance"),
)
# the subject too, so that the unique index (subject, event, form, instance) answers at once
# instead of a walk over every record of the event
_TOP_INSTANCE = (
    select(func.max(_RECORDS.c.instance))
    .where(
        _RECORDS.c.subject_id == _EVENTS.c.subject_id,
        _RECORDS.c.event_id == _EVENTS.c.id,
        _RECORDS.c.form_key == bindparam("form_key"),
    )
    .correlate(_EVENTS)
    .scalar_subquery()
)
_EVENT_AND_TOP_INSTANCE = select(_EVENTS.c.id, _EVENTS.c.occurred_on, _TOP_INSTANCE).where(
    *_THE_EVENT
)
_EVENT_AND_RECORD = (
    select(
        _EVENTS.c.id.label("event_id"),
        _EVENTS.c.occurred_on,
        _RECORDS.c.id,
        _RECORDS.c.data,
        _RECORDS.c.status,
        _RECORDS.c.version,
        _RECORDS.c.created_at,
        _RECORDS.c.updated_at,
    )
    .outerjoin(
        _RECORDS,
        (_RECORDS.c.subject_id == _EVENTS.c.subject_id)
        & (_RECORDS.c.event_id == _EVENTS.c.id)
        & (_RECORDS.c.form_key == bindparam("form_key"))
        & (_RECORDS.c.instance == bindparam("instance")),
    )
    .where(*_THE_EVENT)
)
_INSERT_EVENT = _EVENTS.insert().returning(_EVENTS.c.id)
_EVENT_DONE = (
    _EVENTS.update()
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(occurred_on=bindparam("day"), status=bindparam("done"))
)
_UPDATE_RECORD = (
    _RECORDS.update()
    .where(_RECORDS.c.id == bindparam("record_id"), _RECORDS.c.version == bindparam("seen"))
    .values(
        data=bindparam("new_data"),
        status=bindparam("new_status"),
        version=bindparam("new_version"),
        updated_at=bindparam("now"),
    )
)
_LIVE_SIGNATURES = select(_SIGNATURES.c.id, _SIGNATURES.c.signer, _SIGNATURES.c.meaning).where(
    _SIGNATURES.c.form_record_id == bindparam("record_id"), _SIGNATURES.c.voided_at.is_(None)
)
_VOID_SIGNATURE = (
    _SIGNATURES.update()
    .where(_SIGNATURES.c.id == bindparam("signature_id"))
    .values(voided_at=bindparam("now"), void_reason=bindparam("why"))
)
_DATA_CHANGED = "data changed after signing"


class _Stored(NamedTuple):
    """The record a save changes, as stored."""

    id: int
    data: dict[str, Any]
    status: str
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


def _expire(session: Session, cls: type[Any], row_id: int) -> None:
    """Make a loaded ORM object of the row a Core statement changed read itself again."""
    loaded = session.identity_map.get(identity_key(cls, row_id))
    if loaded is not None:
        session.expire(loaded)


def _event_and_record(
    session: Session,
    facts: SubjectFacts,
    spec: ScheduledEvent,
    event_instance: int,
    form_key: str,
    instance: int | None,
    *,
    repeating: bool,
) -> tuple[int, dt.date | None, _Stored | None, int]:
    """Return the event's id (created if new), its date, the record to change if any, and the
    instance to write.

    One statement reads the event together with, for a new instance of a repeating form, the
    highest instance saved so far, or else the record at the given instance.
    """
    conn = session.connection()
    params = {
        "subject_id": facts.id,
        "event_key": spec.key,
        "event_instance": event_instance,
        "form_key": form_key,
    }
    if repeating and instance is None:
        top = conn.execute(_EVENT_AND_TOP_INSTANCE, params).first()
        if top is None:
            return _new_event(session, params), None, None, 1
        return int(top[0]), top[1], None, (top[2] or 0) + 1
    instance = instance or 1
    found = conn.execute(_EVENT_AND_RECORD, {**params, "instance": instance}).first()
    if found is None:
        return _new_event(session, params), None, None, instance
    record = None if found.id is None else _Stored(*found[2:])
    return int(found.event_id), found.occurred_on, record, instance


def _new_event(session: Session, params: Mapping[str, Any]) -> int:
    values = {
        "subject_id": params["subject_id"],
        "event_key": params["event_key"],
        "instance": params["event_instance"],
        "status": "scheduled",
    }
    return int(session.connection().execute(_INSERT_EVENT, values).scalar_one())


def _insert(session: Session, write: _Write, event_id: int, instance: int) -> SavedForm:
    facts = write.facts
    record_id, now = insert_record(
        session,
        subject=facts,
        event_id=event_id,
        event_key=write.spec.key,
        form_key=write.form.key,
        instance=instance,
        data=write.clean,
        status=write.status,
        actor=write.actor,
        reason=write.reason,
    )
    return write.created(event_id, instance, record_id, now)


def _update(
    session: Session,
    write: _Write,
    event_id: int,
    instance: int,
    row: _Stored,
    expected_version: int | None,
) -> SavedForm:
    facts, form, clean, status, reason = (
        write.facts, write.form, write.clean, write.status, write.reason
    )  # fmt: skip
    stored = write.saved(
        event_id, instance, row.id, dict(row.data), row.status, row.version, row.created_at,
        row.updated_at, created=False,
    )  # fmt: skip
    if expected_version is None:
        raise Conflict(
            f"form {form.key} is already saved (version {row.version}); "
            "edit it with the version you started from"
        )
    if expected_version != row.version:
        raise Conflict(
            f"form {form.key} was saved by someone else first (it is at version "
            f"{row.version}, you edited version {expected_version}); reload and try again"
        )
    if row.status == "locked":
        raise Conflict(f"form {form.key} is locked; ask a monitor to unlock it")
    old = stored.data
    keys = sorted(set(old) | set(clean))
    before = {k: old.get(k) for k in keys if old.get(k) != clean.get(k)}
    after = {k: clean.get(k) for k in before}
    if not before:
        return stored
    if not (reason or "").strip():
        raise ValidationError(
            "a reason is required to change saved data",
            problems=[Problem("reason", "is required to change saved data")],
        )
    now = utcnow()
    conn = session.connection()
    changed = conn.execute(
        _UPDATE_RECORD,
        {
            "record_id": row.id,
            "seen": row.version,
            "new_data": clean,
            "new_status": status,  # a change undoes verification and signing
            "new_version": row.version + 1,
            "now": now,
        },
    )
    if changed.rowcount != 1:
        raise Conflict(f"form {form.key} was saved by someone else first; reload")
    _expire(session, FormRecord, row.id)
    audit.record(
        session,
        actor=write.actor,
        action="update",
        entity_type="form_record",
        entity_id=row.id,
        before=before,
        after=after,
        reason=reason,
        subject_study_id=facts.study_id,
        site_id=facts.site_id,
    )
    for signature in conn.execute(_LIVE_SIGNATURES, {"record_id": row.id}).all():
        conn.execute(
            _VOID_SIGNATURE, {"signature_id": signature.id, "now": now, "why": _DATA_CHANGED}
        )
        _expire(session, Signature, signature.id)
        audit.record(
            session,
            actor=write.actor,
            action="void_signature",
            entity_type="signature",
            entity_id=signature.id,
            before={"signer": signature.signer, "meaning": signature.meaning},
            reason=_DATA_CHANGED,
            subject_study_id=facts.study_id,
            site_id=facts.site_id,
        )
    return replace(stored, data=clean, status=status, version=row.version + 1, updated_at=now)
