"""SQLite's plain-sqlite3 save on unconfirmed facts stores what the ordinary path stores."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, text

from ductal import accounts, audit, forms, records
from ductal.db import make_engine, migrate, session_scope
from ductal.protocols.loader import builtin_protocols
from tests.test_forms import ADVERSE_EVENT
from tests.test_records import TODAY, _enrolled, _follow_up

# the columns that differ between two databases by time alone
_TIMES = {"created_at", "updated_at", "occurred_at", "prev_hash", "hash"}


def _study(path: Any) -> Engine:
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
    with session_scope(engine) as session:
        _enrolled(session)
    return engine


_SAVES: list[dict[str, Any]] = [
    {"form_key": "adverse_event", "event_key": "unscheduled", "data": ADVERSE_EVENT},
    {"form_key": "adverse_event", "event_key": "unscheduled", "data": ADVERSE_EVENT},
    {"form_key": "follow_up", "event_key": "month_1", "data": _follow_up()},  # dates the visit
    {"form_key": "adverse_event", "event_key": "unscheduled", "instance": 7, "data": ADVERSE_EVENT},
]


def _save_all(engine: Engine, *, unconfirmed: bool) -> None:
    for save in _SAVES:
        with session_scope(engine) as session:
            facts = records.subject_facts(session, "LAV-0001")
            assert facts is not None
            if unconfirmed:
                facts = replace(facts, unconfirmed=records.Confirmation("1 = :c_one", {"c_one": 1}))
            forms.write_form(session, facts, actor="coord", today=TODAY, **save)


def _rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        result = conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
        return [{k: v for k, v in row._mapping.items() if k not in _TIMES} for row in result]


def test_the_plain_save_stores_what_the_ordinary_save_stores(tmp_path: Any) -> None:
    ordinary, plain = _study(tmp_path / "ordinary.sqlite"), _study(tmp_path / "plain.sqlite")
    _save_all(ordinary, unconfirmed=False)
    _save_all(plain, unconfirmed=True)
    for table in ("form_records", "events", "audit_entries"):
        assert _rows(plain, table) == _rows(ordinary, table), table
    with plain.connect() as conn:  # times stored as SQLAlchemy stores them
        stored = conn.execute(text("SELECT created_at FROM form_records")).scalars().all()
        entry = conn.execute(text("SELECT occurred_at FROM audit_entries")).scalars().all()
    assert all(len(t) == 26 and t[10] == " " for t in [*stored, *entry])
    for engine in (ordinary, plain):
        with session_scope(engine) as session:
            assert audit.verify_chain(session).ok
        engine.dispose()


def test_an_existing_record_or_changed_facts_store_nothing(tmp_path: Any) -> None:
    engine = _study(tmp_path / "s.sqlite")
    with session_scope(engine) as session:
        facts = records.subject_facts(session, "LAV-0001")
        assert facts is not None
        kept = replace(facts, unconfirmed=records.Confirmation("1", {}))
        forms.write_form(session, kept, actor="coord", today=TODAY, **_SAVES[2])
    before = {t: _rows(engine, t) for t in ("form_records", "events", "audit_entries")}
    with pytest.raises(forms.Unconfirmed), session_scope(engine) as session:
        forms.write_form(session, kept, actor="coord", today=TODAY, **_SAVES[2])  # exists
    with engine.begin() as conn:
        conn.execute(text("UPDATE subjects SET status = 'withdrawn'"))
    with pytest.raises(forms.Unconfirmed), session_scope(engine) as session:
        forms.write_form(session, kept, actor="coord", today=TODAY, **_SAVES[0])
    assert {t: _rows(engine, t) for t in before} == before
    engine.dispose()
