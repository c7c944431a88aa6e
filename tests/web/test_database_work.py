"""Where the web app runs a short transaction: the event loop when SQLite is free, or a thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError

from ductal import audit
from ductal.db import session_scope
from ductal.models import AuditEntry
from ductal.web.deps import run_database_work
from tests.web.conftest import ADVERSE_EVENT, World, bearer, enrolled

NOTE = text("INSERT INTO audit_entries_probe (note) VALUES ('x')")


def _probe(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(text("CREATE TABLE audit_entries_probe (note TEXT)"))


def _insert_and_name_thread(engine: Engine) -> str:
    with engine.begin() as conn:
        conn.execute(NOTE)
    return threading.current_thread().name


def _rows(world: World) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_entries_probe")).scalar_one())


def test_free_sqlite_runs_on_the_event_loop_postgresql_on_a_thread(world: World) -> None:
    _probe(world)
    config = world.app.state.ductal
    where = asyncio.run(run_database_work(config, _insert_and_name_thread))
    if world.engine.dialect.name == "sqlite":
        assert where == threading.current_thread().name  # the loop's own thread
        assert config.inline_engine is not None
    else:
        assert where != threading.current_thread().name
        assert config.inline_engine is None
    assert _rows(world) == 1


def test_work_waits_on_a_thread_while_another_request_holds_sqlite(world: World) -> None:
    if world.engine.dialect.name != "sqlite":
        pytest.skip("the in-process lock is SQLite's")
    _probe(world)
    config = world.app.state.ductal
    config.sqlite_lock.acquire()
    threading.Timer(0.3, config.sqlite_lock.release).start()
    where = asyncio.run(run_database_work(config, _insert_and_name_thread))
    assert where != threading.current_thread().name
    assert _rows(world) == 1


def test_another_process_holding_sqlite_sends_the_work_to_a_thread(world: World) -> None:
    """A writer outside this process holds SQLite's lock: the first attempt fails at once and
    is rolled back whole; the work then waits for the lock on a worker thread, and runs once."""
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's file lock")
    _probe(world)
    config = world.app.state.ductal
    other = sqlite3.connect(
        str(world.engine.url.database), isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, other.rollback).start()
    calls: list[str] = []

    def work(engine: Engine) -> str:
        calls.append(threading.current_thread().name)
        return _insert_and_name_thread(engine)

    where = asyncio.run(run_database_work(config, work))
    other.close()
    assert calls == [threading.current_thread().name, where]  # inline first, then a thread
    assert where != threading.current_thread().name
    assert _rows(world) == 1


def test_other_database_errors_are_not_retried(world: World) -> None:
    config = world.app.state.ductal
    calls: list[int] = []

    def broken(engine: Engine) -> None:
        calls.append(1)
        with engine.begin() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(DBAPIError, match="no_such_table"):
        asyncio.run(run_database_work(config, broken))
    assert calls == [1]


def test_api_save_while_sqlite_is_busy_elsewhere_is_stored_once(world: World, client: Any) -> None:
    """The whole save (token, subject, validation, record, audit entry) survives the fallback."""
    if world.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's file lock")
    headers = bearer(world, "coordinator")
    study_id = enrolled(client, headers)
    with world.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    other = sqlite3.connect(
        str(world.engine.url.database), isolation_level=None, check_same_thread=False
    )
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, other.rollback).start()
    saved = client.post(
        f"/api/v1/subjects/{study_id}/forms/adverse_event",
        json={"event": "unscheduled", "data": dict(ADVERSE_EVENT)},
        headers=headers,
    )
    other.close()
    assert saved.status_code == 200, saved.text
    assert saved.json()["instance"] == 1
    with world.engine.connect() as conn:
        after = conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    assert after == before + 1


def test_postgresql_api_save_locks_the_subject_with_its_first_statement(
    world: World, client: Any
) -> None:
    """Token, roles, subject and the subject's save lock in one statement; then the visit, the
    record and its audit entry (which takes the chain's lock) in a second. (A token's next save
    of the subject needs only the second: tests/web/test_recall.py.)"""
    if world.engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")
    headers = bearer(world, "coordinator")
    study_id = enrolled(client, headers)
    first = client.post(  # makes the visit: the next save finds it
        f"/api/v1/subjects/{study_id}/forms/adverse_event",
        json={"event": "unscheduled", "data": dict(ADVERSE_EVENT)},
        headers=headers,
    )
    assert first.status_code == 200, first.text
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    world.app.state.ductal.recall.clear()  # what the first save read is not used
    event.listen(world.engine, "before_cursor_execute", note)
    try:
        saved = client.post(
            f"/api/v1/subjects/{study_id}/forms/adverse_event",
            json={"event": "unscheduled", "data": dict(ADVERSE_EVENT)},
            headers=headers,
        )
    finally:
        event.remove(world.engine, "before_cursor_execute", note)
    assert saved.status_code == 200, saved.text
    assert len(seen) == 2, "\n".join(s[:50].replace("\n", " ") for s in seen)
    first_statement, save = seen
    assert "pg_advisory_xact_lock" in first_statement  # the subject's save lock
    assert "api_tokens" in first_statement and "subjects" in first_statement
    assert "INSERT INTO form_records" in save and "UPDATE audit_head" in save
    assert "INSERT INTO audit_entries" in save and "pg_advisory_xact_lock(" in save
    assert saved.json()["instance"] == 2
    with session_scope(world.engine) as session:
        assert audit.verify_chain(session).ok


def test_the_server_keeps_the_configured_number_of_connections(tmp_path: Any) -> None:
    """Beyond the pool's size each connection is opened for one request and closed after it
    (on PostgreSQL a server process started and ended per request): the size is a setting."""
    from ductal.config import load_settings
    from ductal.web.app import create_app

    settings = load_settings({"DUCTAL_DATA_DIR": str(tmp_path), "DUCTAL_DB_POOL_SIZE": "7"})
    engine = create_app(settings).state.ductal.engine
    try:
        assert engine.pool.size() == 7
        held = [engine.connect() for _ in range(14)]  # as many again for a burst
        assert engine.pool.checkedout() == 14
        for conn in held:
            conn.close()
        assert engine.pool.checkedin() == 7  # the burst's extra connections are closed
    finally:
        engine.dispose()


def test_at_most_the_configured_number_of_transactions_run_on_threads(world: World) -> None:
    """Threads beyond a few only fight over Python's interpreter lock: the rest wait their turn
    on the event loop, and every one of them still runs."""
    config = world.app.state.ductal
    config.database_concurrency = 2
    lock = threading.Lock()
    running = 0
    most = 0

    def work(_engine: Engine) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # a transaction waiting on the database
        with lock:
            running -= 1
        return threading.current_thread().name

    async def many() -> list[str]:
        held = config.sqlite_lock.acquire() if world.engine.dialect.name == "sqlite" else False
        try:  # SQLite: another request holds the database, so all go to threads
            tasks = [asyncio.create_task(run_database_work(config, work)) for _ in range(7)]
            await asyncio.sleep(0.01)
            if held:
                config.sqlite_lock.release()
                held = False
            return await asyncio.gather(*tasks)
        finally:
            if held:
                config.sqlite_lock.release()

    # on SQLite the in-process lock lets one run at a time anyway
    limit = 1 if world.engine.dialect.name == "sqlite" else 2
    names = asyncio.run(many())
    assert len(names) == 7 and threading.current_thread().name not in names
    assert most == limit
    names = asyncio.run(many())  # a second event loop gets its own turns
    assert len(names) == 7 and most == limit
