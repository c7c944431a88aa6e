"""The event loop's own PostgreSQL connections: reuse, a closed or failed connection replaced,
at most a few at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text

from ductal.errors import DatabaseUnavailable
from ductal.web.loop_db import LoopConnections

PID = "SELECT pg_backend_pid()"


@pytest.fixture
def postgres(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's")
    return engine


def test_one_connection_serves_statement_after_statement(postgres: Engine) -> None:
    connections = LoopConnections(postgres, 3)

    async def three() -> list[tuple[object, ...] | None]:
        return [await connections.fetch_one(PID, {}) for _ in range(3)]

    rows = asyncio.run(three())
    assert len({row for row in rows}) == 1
    connections.close()


def test_statements_commit_as_they_end(postgres: Engine) -> None:
    with postgres.begin() as conn:
        conn.execute(text("CREATE TABLE loop_probe (n integer)"))
    connections = LoopConnections(postgres, 1)
    asyncio.run(
        connections.fetch_one("INSERT INTO loop_probe VALUES (%(n)s) RETURNING n", {"n": 7})
    )
    with postgres.connect() as conn:
        assert conn.execute(text("SELECT n FROM loop_probe")).scalar_one() == 7
    connections.close()


def test_a_connection_the_server_closed_is_replaced(postgres: Engine) -> None:
    connections = LoopConnections(postgres, 1)

    async def run() -> tuple[object, object]:
        first = await connections.fetch_one(PID, {})
        assert first is not None
        with postgres.connect() as conn:  # as a server restart or an idle timeout would
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first[0]})
        await asyncio.sleep(0.2)
        second = await connections.fetch_one(PID, {})
        assert second is not None
        return first[0], second[0]

    first, second = asyncio.run(run())
    assert first != second
    connections.close()


def test_a_failed_statement_closes_its_connection(postgres: Engine) -> None:
    connections = LoopConnections(postgres, 1)

    async def run() -> tuple[object, object]:
        first = await connections.fetch_one(PID, {})
        with pytest.raises(psycopg.errors.SyntaxError):
            await connections.fetch_one("SELEC 1", {})
        second = await connections.fetch_one(PID, {})
        assert first is not None and second is not None
        return first[0], second[0]

    first, second = asyncio.run(run())
    assert first != second
    connections.close()


def test_at_most_size_connections_at_once(postgres: Engine) -> None:
    connections = LoopConnections(postgres, 2)

    async def run() -> set[object]:
        rows = await asyncio.gather(
            *(
                connections.fetch_one("SELECT pg_backend_pid(), pg_sleep(0.05)", {})
                for _ in range(6)
            )
        )
        return {row[0] for row in rows if row is not None}

    assert len(asyncio.run(run())) <= 2
    connections.close()


def test_an_unreachable_database_is_reported_plainly() -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/nothing")
    connections = LoopConnections(engine, 1)
    with pytest.raises(DatabaseUnavailable, match="cannot reach the database"):
        asyncio.run(connections.fetch_one(PID, {}))


def test_the_web_app_needs_psycopg_only_for_postgresql(tmp_path: object) -> None:
    """psycopg is the postgres extra's: a SQLite server starts and saves without it."""
    code = """
import sys
sys.modules["psycopg"] = None  # as if the postgres extra were not installed
from fastapi.testclient import TestClient
from ductal.config import load_settings
from ductal.web.app import create_app
app = create_app(load_settings({"DUCTAL_DATA_DIR": sys.argv[1]}))
assert app.state.ductal.loop_connections is None
with TestClient(app) as client:
    assert client.get("/login").status_code == 200
"""
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
