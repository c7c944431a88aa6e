"""The audit trail: chained, append-only in the database, and tamper-evident."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DatabaseError

from ductal import audit
from ductal.db import session_scope


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
