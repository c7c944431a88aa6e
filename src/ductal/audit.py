"""The audit trail: append-only, hash-chained entries written in the same transaction as the change.

Each entry's hash covers its content and the previous entry's hash, so editing, deleting or
reordering any stored row breaks the chain from that row on; :func:`verify_chain` finds the first
broken entry. The database itself refuses UPDATE and DELETE on the table (see the migrations).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import BigInteger, ColumnElement, Table, func, literal, select, text
from sqlalchemy.orm import Session

from ductal.errors import AuditError
from ductal.models import AuditEntry, utcnow

GENESIS_HASH = "0" * 64
_PG_AUDIT_LOCK = 0x0D0C7A1  # one advisory lock key for the whole chain
_PG_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
_LOCK_HELD = "ductal.audit.chain_lock"  # session.info key: the transaction holding the lock
_LOCK_ASKED = "ductal.audit.chain_lock_asked"  # ... and the one that asked for it, savepoints too
_AUDIT_TABLE = cast(Table, AuditEntry.__table__)
_INSERT = _AUDIT_TABLE.insert().returning(_AUDIT_TABLE.c.id)
_HEAD = select(AuditEntry.hash, AuditEntry.occurred_at).order_by(AuditEntry.id.desc()).limit(1)


def _json_safe(value: Any) -> Any:
    """Return ``value`` with dates and other non-JSON scalars turned into strings."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_json_safe(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class Chained(Protocol):
    """What an audit entry's digest covers: a stored :class:`AuditEntry` or a :class:`NewEntry`."""

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


def entry_digest(entry: Chained) -> str:
    """Return the SHA-256 that chains ``entry`` to the hash stored in its ``prev_hash``."""
    payload = {
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
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def lock_chain(session: Session) -> None:
    """Serialise writers on PostgreSQL so that two transactions never extend the same chain head.

    SQLite needs nothing here: ductal opens every SQLite transaction with BEGIN IMMEDIATE.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    # the lock lasts until the transaction ends: take it once per transaction (record takes it
    # before reading the chain head, and so may a form save before reading the record). Inside
    # a savepoint always ask, since rolling the savepoint back would release it.
    if not session.in_nested_transaction() and chain_locked(session):
        return
    session.execute(_PG_LOCK, {"k": _PG_AUDIT_LOCK})
    note_chain_locked(session)


def chain_lock_column() -> ColumnElement[Any]:
    """Return a column that takes the chain's lock within another PostgreSQL statement.

    For a statement that writes before the chain head is read (a later statement, which then
    sees every entry committed before the lock was granted); call :func:`note_chain_locked`
    after it. Saves the round trip of a statement of its own.
    """
    return func.pg_advisory_xact_lock(literal(_PG_AUDIT_LOCK, BigInteger)).label("chain_locked")


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
    lock_chain(session)
    session.flush()
    conn = session.connection()  # plain Core statements: no ORM execution layer needed
    head = conn.execute(_HEAD).first()
    prev_hash = head.hash if head is not None else GENESIS_HASH
    occurred_at = utcnow()
    if head is not None and occurred_at < head.occurred_at:
        occurred_at = head.occurred_at  # a clock step backwards never reorders the trail
    values: dict[str, Any] = {
        "occurred_at": occurred_at,
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": str(entity_id),
        "subject_study_id": subject_study_id,
        "site_id": site_id,
        "before": None if before is None else _json_safe(before),
        "after": None if after is None else _json_safe(after),
        "reason": reason,
        "prev_hash": prev_hash,
    }
    entry = NewEntry(**values)
    entry.hash = values["hash"] = entry_digest(entry)
    # one Core INSERT rather than a unit-of-work flush: the entry is never changed afterwards,
    # so the session has nothing to track
    entry.id = conn.execute(_INSERT, values).scalar_one()
    return entry


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
    """Walk the whole trail in order and return where, if anywhere, the chain first breaks."""
    stmt = select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=batch)
    result = session.scalars(stmt)
    try:
        return _walk(result)
    finally:
        result.close()


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
