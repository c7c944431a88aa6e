"""The audit trail: chained, append-only in the database, and tamper-evident."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.exc import DatabaseError

from ductal import audit
from ductal.db import make_engine, migrate, session_scope
from ductal.models import AuditEntry, AuditHead


def _append(engine: Engine, n: int) -> None:
    with session_scope(engine) as session:
        for i in range(n):
            audit.record(
                session,
                actor="tester",
                action="update",
                entity_type="form_record",
                entity_id=i,
                before={"size_mm": i},
                after={"size_mm": i + 1, "note": "减少"},
                reason="typo",
                subject_study_id=f"LAV-{i:04d}",
            )


def _disable_protection(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
            conn.execute(text("DROP TRIGGER audit_entries_no_delete"))
        else:
            conn.execute(
                text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only")
            )


def test_empty_trail_verifies(engine: Engine) -> None:
    with session_scope(engine) as session:
        report = audit.verify_chain(session)
    assert report.ok and report.entries == 0 and report.head == audit.GENESIS_HASH


def test_entries_chain_to_each_other(engine: Engine) -> None:
    _append(engine, 5)
    with session_scope(engine) as session:
        report = audit.verify_chain(session)
        head = audit.chain_head(session)
    assert report.ok and report.entries == 5
    assert head is not None and report.head == head.hash


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_entries SET actor = 'x'", "DELETE FROM audit_entries"]
)
def test_database_refuses_changes(engine: Engine, statement: str) -> None:
    _append(engine, 2)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with session_scope(engine) as session:
        assert audit.verify_chain(session).entries == 2


@pytest.mark.parametrize(
    ("tamper", "bad_id", "wording"),
    [
        pytest.param(
            "UPDATE audit_entries SET reason = 'innocent' WHERE id = 3", 3, "altered", id="edit"
        ),
        pytest.param(
            "UPDATE audit_entries SET after = NULL WHERE id = 2", 2, "altered", id="edit-json"
        ),
        pytest.param("DELETE FROM audit_entries WHERE id = 2", 3, "does not follow", id="delete"),
        pytest.param(
            "UPDATE audit_entries SET id = id + 100 WHERE id IN (2, 3)",
            4,
            "does not follow",
            id="reorder",
        ),
    ],
)
def test_verify_names_first_tampered_entry(
    engine: Engine, tamper: str, bad_id: int, wording: str
) -> None:
    _append(engine, 5)
    _disable_protection(engine)
    with engine.begin() as conn:
        conn.execute(text(tamper))
    with session_scope(engine) as session:
        report = audit.verify_chain(session)
    assert not report.ok
    assert report.first_bad_id == bad_id
    assert report.problem is not None and wording in report.problem


def test_chain_lock_is_taken_once_per_transaction_and_held(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("the advisory lock is PostgreSQL's (SQLite transactions begin IMMEDIATE)")
    from sqlalchemy import event

    locks: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.startswith("SELECT pg_advisory_xact_lock"):  # lock_chain's own
            locks.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        for expected in (1, 2):
            with session_scope(engine) as session:
                audit.lock_chain(session)
                audit.record(session, actor="t", action="note", entity_type="test", entity_id=1)
                audit.record(session, actor="t", action="note", entity_type="test", entity_id=2)
                assert len(locks) == expected  # once in this transaction, again in the next
                with engine.connect() as other:  # and another transaction cannot take it
                    taken = other.execute(
                        text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": audit._PG_AUDIT_LOCK}
                    ).scalar_one()
                    other.rollback()
                assert taken is False
        with session_scope(engine) as session:
            audit.lock_chain(session)
            with session.begin_nested():  # a savepoint always asks (its rollback would release)
                audit.lock_chain(session)
        assert len(locks) == 4
    finally:
        event.remove(engine, "before_cursor_execute", count)
    with session_scope(engine) as session:
        assert audit.verify_chain(session).ok


AWKWARD = {
    "zh": "疼痛减轻 🙂",
    "quotes": 'she said "it\'s fine"',
    "backslash": "C:\\path\\u0000deadbeef:prev",  # looks like an escape and a placeholder
    "controls": "line\nbreak\ttab\x01\x1f",
    "nested": {"b": [1, 2.5, None, True, {"z": "ž", "a": -0.125}], "a": []},
    "numbers": [0, -7, 2**40, 0.1, 1e-07, 12345.678],
    "empty": "",
}


def test_awkward_values_chain_the_same_on_every_database(engine: Engine) -> None:
    """On PostgreSQL the database digests the canonical JSON that ductal writes; every value
    must come out exactly as Python's own digest of it, and verify afterwards."""
    with session_scope(engine) as session:
        entries = [
            audit.record(
                session,
                actor="tester",
                action="update",
                entity_type="form_record",
                entity_id='7"x',
                before={"k": k},
                after={k: v},
                reason='it\'s "awkward" — 理由',
                subject_study_id="LAV-0001",
                site_id=3,
            )
            for k, v in AWKWARD.items()
        ]
    for entry in entries:
        assert entry.hash == audit.entry_digest(entry)
    with session_scope(engine) as session:
        report = audit.verify_chain(session)
        stored = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    assert report.ok and report.entries == len(AWKWARD), report.problem
    assert [e.hash for e in stored] == [e.hash for e in entries]
    assert [e.after for e in stored] == [{k: v} for k, v in AWKWARD.items()]
    assert stored[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))


def test_entry_time_never_goes_before_the_head(engine: Engine) -> None:
    """A clock stepping back (or a writer whose clock runs behind) never reorders the trail."""
    _append(engine, 1)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with engine.begin() as conn:  # the newest entry as written by a clock an hour ahead
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
            conn.execute(update(AuditEntry.__table__).values(occurred_at=ahead))
        conn.execute(update(AuditHead.__table__).values(occurred_at=ahead))
    with session_scope(engine) as session:
        entry = audit.record(session, actor="t", action="note", entity_type="test", entity_id=1)
    assert entry.occurred_at == ahead
    assert entry.hash == audit.entry_digest(entry)


def test_head_row_follows_the_newest_entry(engine: Engine) -> None:
    _append(engine, 3)
    with session_scope(engine) as session:
        head = session.get_one(AuditHead, 1)
        newest = audit.chain_head(session)
        assert newest is not None
        assert (head.entry_id, head.hash, head.prev_hash) == (
            newest.id,
            newest.hash,
            newest.prev_hash,
        )
        assert head.occurred_at == newest.occurred_at


def test_upgrade_starts_the_head_at_the_newest_entry(blank_database_url: str) -> None:
    """A trail written before the head row existed (schema 0002) goes on from its last entry."""
    engine = make_engine(blank_database_url)
    try:
        migrate(engine, "0002")
        prev = audit.GENESIS_HASH
        with engine.begin() as conn:  # entries as ductal wrote them at 0002
            for i in range(3):
                entry = audit.NewEntry(
                    prev_hash=prev,
                    occurred_at=dt.datetime(2026, 1, 1, 9, i, tzinfo=dt.UTC),
                    actor="old",
                    action="note",
                    entity_type="test",
                    entity_id=str(i),
                    subject_study_id=None,
                    site_id=None,
                    before=None,
                    after={"i": i},
                    reason=None,
                )
                entry.hash = prev = audit.entry_digest(entry)
                values = {k: getattr(entry, k) for k in audit.NewEntry.__slots__ if k != "id"}
                conn.execute(insert(AuditEntry.__table__).values(**values))
        migrate(engine)
        _append(engine, 2)
        with session_scope(engine) as session:
            report = audit.verify_chain(session)
        assert report.ok and report.entries == 5, report.problem
    finally:
        engine.dispose()
