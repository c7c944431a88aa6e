"""The audit trail: append-only, hash-chained entries written in the same transaction as the change.

Each entry's hash covers its content and the previous entry's hash, so editing, deleting or
reordering any stored row breaks the chain from that row on; :func:`verify_chain` finds the first
broken entry, and compares the end of the trail with the head kept in ``audit_head``, so entries
cut from the end are noticed too. The database itself refuses UPDATE and DELETE on the table
(see the migrations).

On PostgreSQL an entry is appended by one statement that takes the chain's advisory lock, moves
the head row and inserts the entry (:func:`pg_append`): the lock queues the writers in order,
the head row's old values are what the new entry chains to, and the digest is computed by the
database from the entry's canonical JSON, written here with placeholders for the values only the
database knows (previous hash, time, and, within a larger statement, the id of the row the entry
describes). On SQLite, whose transactions run one at a time, the newest entry is read and a
trigger moves the head.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, cast

from sqlalchemy import Table, TextClause, func, inspect, select, text
from sqlalchemy.orm import Session

from ductal.errors import AuditError
from ductal.models import AuditEntry, AuditHead, utcnow

GENESIS_HASH = "0" * 64
_PG_AUDIT_LOCK = 0x0D0C7A1  # one advisory lock key for the whole chain
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_LOCK_HELD = "ductal.audit.chain_lock"  # session.info key: the transaction holding the lock
_LOCK_ASKED = "ductal.audit.chain_lock_asked"  # ... and the one that asked for it, savepoints too
_AUDIT_TABLE = cast(Table, AuditEntry.__table__)
_INSERT = _AUDIT_TABLE.insert().returning(_AUDIT_TABLE.c.id)
_HEAD = select(AuditEntry.hash, AuditEntry.occurred_at).order_by(AuditEntry.id.desc()).limit(1)


def json_safe(value: Any) -> Any:
    """Return ``value`` with dates and other non-JSON scalars turned into strings."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [json_safe(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass(slots=True)
class NewEntry:
    """An entry :func:`record` has just appended (not an ORM object: nothing tracks it)."""

    prev_hash: str
    occurred_at: dt.datetime
    actor: str
    action: str
    entity_type: str
    entity_id: str
    subject_study_id: str | None
    site_id: int | None
    before: Any
    after: Any
    reason: str | None
    hash: str = ""
    id: int = 0


def _payload(entry: AuditEntry | NewEntry) -> dict[str, Any]:
    return {
        "prev": entry.prev_hash,
        "at": entry.occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": entry.actor,
        "action": entry.action,
        "entity": [entry.entity_type, entry.entity_id],
        "subject": entry.subject_study_id,
        "site": entry.site_id,
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_digest(entry: AuditEntry | NewEntry) -> str:
    """Return the SHA-256 that chains ``entry`` to the hash stored in its ``prev_hash``."""
    return hashlib.sha256(_canonical(_payload(entry)).encode()).hexdigest()


def lock_chain(session: Session) -> None:
    """Serialise writers on PostgreSQL from here to the end of the transaction.

    For callers that read something the entry they will write depends on (a record's state, a
    randomisation list's next slot). Every append takes the same lock, so a caller that only
    writes needs no call. SQLite needs nothing here: ductal opens every SQLite transaction with
    BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    # the lock lasts until the transaction ends: take it once per transaction. Inside a
    # savepoint always ask, since rolling the savepoint back would release it.
    if not session.in_nested_transaction() and chain_locked(session):
        return
    session.execute(_PG_LOCK, {"k": _PG_AUDIT_LOCK})
    note_chain_locked(session)


_NO_HEAD = "the audit trail has no head row; bring the schema up to date with 'ductal init'"


def note_chain_locked(session: Session) -> None:
    """Record that this transaction now holds the chain's lock (see :func:`lock_chain`)."""
    root = session.get_transaction()
    session.info[_LOCK_ASKED] = root
    if not session.in_nested_transaction():
        session.info[_LOCK_HELD] = root


def chain_locked(session: Session) -> bool:
    """Say whether this transaction surely holds the chain's lock (asked outside a savepoint)."""
    return _marked(session, _LOCK_HELD)


def chain_lock_asked(session: Session) -> bool:
    """Say whether this transaction has asked for the chain's lock (PostgreSQL).

    It may since have let it go, if it asked inside a savepoint that was rolled back: callers
    that must hold it call :func:`lock_chain`, which asks again where it cannot be sure.
    """
    return _marked(session, _LOCK_ASKED)


def _marked(session: Session, key: str) -> bool:
    transaction = session.get_transaction()
    return transaction is not None and session.info.get(key) is transaction


def chain_head(session: Session) -> AuditEntry | None:
    """Return the newest audit entry, or None for an empty trail."""
    return session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).first()


# --- PostgreSQL: one statement appends ------------------------------------------------------

# A placeholder in canonical JSON: a string no stored value can hold by chance, since its random
# part is drawn when the process starts and never shown.
_SLOT_MARK = f"\x00{secrets.token_hex(16)}:"
_SLOT_IN_JSON = re.compile('"' + re.escape(json.dumps(_SLOT_MARK)[1:-1]) + r'([a-z_]+)"')


class Slot(str):
    """A value of an entry that the database fills in (see :func:`pg_append`)."""

    __slots__ = ()

    def __new__(cls, name: str) -> Slot:
        return super().__new__(cls, _SLOT_MARK + name)


# what the database puts in the placeholders the append itself fills: the entry's time (never
# before the head's, so a clock stepping back cannot reorder the trail) and the previous hash
_AT = "GREATEST(audit_head.occurred_at, CAST(:at AS timestamptz))"
_ISO_UTC = """'YYYY-MM-DD"T"HH24:MI:SS.US'"""  # with '+00:00': Python's isoformat in UTC
_OWN_SLOTS = {
    "at": f"""'"' || to_char({_AT} AT TIME ZONE 'UTC', {_ISO_UTC}) || '+00:00"'""",
    "prev": """'"' || audit_head.hash || '"'""",
}


def _json_sql(value: Any, slots: Mapping[str, str], params: dict[str, Any], stem: str) -> str:
    """Return SQL building the canonical JSON text of ``value``, placeholders filled by SQL.

    ``slots`` gives, per placeholder name, SQL for the JSON text of its value; the literal
    parts between placeholders become bind parameters named after ``stem``.
    """
    parts = _SLOT_IN_JSON.split(_canonical(value))
    sql: list[str] = []
    for k, part in enumerate(parts):
        if k % 2:
            if part not in slots:
                raise AuditError(f"no SQL for the audit placeholder {part!r}")
            sql.append(f"({slots[part]})")
        else:
            params[f"{stem}{k}"] = part
            sql.append(f"CAST(:{stem}{k} AS text)")
    return " || ".join(sql)


@functools.lru_cache(maxsize=512)
def sql_text(sql: str) -> TextClause:
    """Return ``text(sql)``, made once per distinct statement.

    The append's statements differ only in how many placeholders an entry's JSON holds, so a
    few hundred cover every form; making a text clause parses its whole SQL for parameters,
    which on a busy server costs more than looking it up.

    Runs of white space become one space (ductal's statements hold no such run inside a quoted
    literal): psycopg keeps its conversion of a statement to the server's form only for
    statements of at most 4 KiB, and converts a longer one again on every execution.
    """
    return text(" ".join(sql.split()))


@dataclass(frozen=True)
class PgAppend:
    """Common table expressions that append one entry, for a larger PostgreSQL statement.

    ``ctes`` defines ``audit_moved`` (the head row, moved) and ``audit_added`` (the entry:
    ``id``, ``occurred_at``, ``prev_hash``, ``hash``); ``params`` are their bind values.
    """

    ctes: str
    params: dict[str, Any]


def pg_append(
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
    subject_study_id: str | None = None,
    site_id: int | None = None,
    slots: Mapping[str, str] | None = None,
    source: str | None = None,
) -> PgAppend:
    """Return SQL appending one entry on PostgreSQL, in the statement that moves the head row.

    Values may hold :class:`Slot` placeholders, filled by the SQL ``slots`` gives for them
    (say ``{"entity": "rec.id::text"}`` for a row inserted by an earlier part of the
    statement). With ``source``, the name of such a part, the entry is appended only if that
    part yields a row. The caller must hold the subject locks it needs before this statement
    (the chain's lock is taken last).
    """
    if not actor:
        raise AuditError("an audit entry needs an actor")
    slots = {**_OWN_SLOTS, **(slots or {})}
    params: dict[str, Any] = {
        "at": utcnow(),
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "subject_study_id": subject_study_id,
        "site_id": site_id,
        "reason": reason,
    }
    before_json = None if before is None else json_safe(before)
    after_json = None if after is None else json_safe(after)
    payload = {
        "prev": Slot("prev"),
        "at": Slot("at"),
        "actor": actor,
        "action": action,
        "entity": [entity_type, entity_id],
        "subject": subject_study_id,
        "site": site_id,
        "before": before_json,
        "after": after_json,
        "reason": reason,
    }
    digest = _json_sql(payload, slots, params, "d")
    entity = (
        f"({slots[entity_id[len(_SLOT_MARK) :]]})::jsonb #>> '{{}}'"
        if isinstance(entity_id, Slot)
        else "CAST(:entity_id AS text)"
    )
    params["entity_id"] = str(entity_id)
    stored: dict[str, str] = {}
    for column, value in (("before", before_json), ("after", after_json)):
        stored[column] = (
            "NULL" if value is None else f"CAST({_json_sql(value, slots, params, column)} AS jsonb)"
        )
    from_source = f" FROM {source}" if source else ""
    # every value arrives as a bind parameter; the text joins ductal's own fragments only
    ctes = f"""audit_moved AS (
  UPDATE audit_head SET
    entry_id = nextval(pg_get_serial_sequence('audit_entries', 'id')),
    prev_hash = audit_head.hash,
    occurred_at = {_AT},
    hash = encode(sha256(convert_to({digest}, 'UTF8')), 'hex'){from_source}
  WHERE audit_head.id = 1 AND pg_advisory_xact_lock({_PG_AUDIT_LOCK}) IS NOT NULL
  RETURNING audit_head.entry_id, audit_head.prev_hash, audit_head.hash, audit_head.occurred_at
), audit_added AS (
  INSERT INTO audit_entries (id, occurred_at, actor, action, entity_type, entity_id,
    subject_study_id, site_id, before, after, reason, prev_hash, hash)
  SELECT m.entry_id, m.occurred_at, :actor, :action, :entity_type, {entity},
    :subject_study_id, CAST(:site_id AS integer), {stored["before"]}, {stored["after"]}, :reason,
    m.prev_hash, m.hash
  FROM audit_moved AS m{", " + source if source else ""}
  RETURNING id, occurred_at, prev_hash, hash
)"""  # nosec B608
    return PgAppend(ctes, params)


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | int,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str | None = None,
    subject_study_id: str | None = None,
    site_id: int | None = None,
) -> NewEntry:
    """Append one audit entry to the chain inside the caller's transaction and return it.

    The returned entry carries its stored values and ``id``.
    """
    if not actor:
        raise AuditError("an audit entry needs an actor")
    session.flush()
    conn = session.connection()  # plain Core statements: no ORM execution layer needed
    values: dict[str, Any] = {
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": str(entity_id),
        "subject_study_id": subject_study_id,
        "site_id": site_id,
        "before": None if before is None else json_safe(before),
        "after": None if after is None else json_safe(after),
        "reason": reason,
    }
    if conn.dialect.name == "postgresql":
        append = pg_append(**values)
        added = conn.execute(sql_text(f"WITH {append.ctes} {_ADDED}"), append.params).first()
        if added is None:
            raise AuditError(_NO_HEAD)
        note_chain_locked(session)
        return NewEntry(
            **values,
            occurred_at=added.occurred_at.astimezone(dt.UTC),
            prev_hash=added.prev_hash,
            hash=added.hash,
            id=added.id,
        )
    head = conn.execute(_HEAD).first()
    entry = next_entry(values, None if head is None else (head.hash, head.occurred_at))
    # one Core INSERT rather than a unit-of-work flush: the entry is never changed afterwards,
    # so the session has nothing to track
    entry.id = conn.execute(_INSERT, entry_values(entry)).scalar_one()
    return entry


def next_entry(values: Mapping[str, Any], head: tuple[str, dt.datetime] | None) -> NewEntry:
    """Return the entry of ``values`` (those :func:`record` takes, JSON-safe) appended after
    ``head`` (the newest entry's hash and time; None for an empty trail), digest included.

    Its time is now, or the head's if the clock has stepped back: the trail never goes back.
    """
    now = utcnow()
    entry = NewEntry(
        **values,
        prev_hash=GENESIS_HASH if head is None else head[0],
        occurred_at=now if head is None or now >= head[1] else head[1],
    )
    entry.hash = entry_digest(entry)
    return entry


def entry_values(entry: NewEntry) -> dict[str, Any]:
    """Return the column values of ``entry``'s row (its id aside)."""
    return {name: getattr(entry, name) for name in _ENTRY_COLUMNS}


_ENTRY_COLUMNS = tuple(f.name for f in fields(NewEntry) if f.name != "id")


_ADDED = "SELECT id, occurred_at, prev_hash, hash FROM audit_added"


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify_chain` found."""

    entries: int
    head: str
    first_bad_id: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


def verify_chain(session: Session, *, batch: int = 5000) -> ChainReport:
    """Walk the whole trail in order and return where, if anywhere, the chain first breaks.

    The trail must also end where its head row says it does (a database whose schema predates
    the head row is walked only).
    """
    stmt = select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=batch)
    result = session.scalars(stmt)
    try:
        report = _walk(result)
    finally:
        result.close()
    if not report.ok or not inspect(session.connection()).has_table("audit_head"):
        return report
    head = session.execute(select(AuditHead.entry_id, AuditHead.hash)).first()
    if head is None:
        return replace(report, first_bad_id=0, problem="the audit trail's head row is missing")
    if head.hash != report.head:
        last = session.scalar(select(func.max(AuditEntry.id))) or 0
        return replace(
            report,
            first_bad_id=last,
            problem=(
                f"the trail ends at entry {last} but its head row names entry {head.entry_id} "
                "(entries were removed from the end, or the head row was altered)"
            ),
        )
    return report


def _walk(entries: Iterable[AuditEntry]) -> ChainReport:
    prev_hash = GENESIS_HASH
    count = 0
    for entry in entries:
        count += 1
        if entry.prev_hash != prev_hash:
            return ChainReport(
                count,
                prev_hash,
                entry.id,
                f"entry {entry.id} does not follow the entry before it "
                "(an entry was deleted, inserted or reordered)",
            )
        expected = entry_digest(entry)
        if expected != entry.hash:
            return ChainReport(
                count, prev_hash, entry.id, f"entry {entry.id} was altered after it was written"
            )
        prev_hash = entry.hash
    return ChainReport(count, prev_hash)
