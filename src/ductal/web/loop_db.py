"""PostgreSQL on the event loop: single self-committing statements, with no thread between.

The web app runs its transactions on worker threads (:func:`ductal.web.deps.run_database_work`).
For a request whose whole database work is one statement that commits as it ends — a script's
repeated form save (:class:`ductal.web.deps.SubjectWork`) — the hand-over to a thread and back,
with the interpreter lock passed between the two at each step, and SQLAlchemy's session and
execution layers cost more than the statement. :class:`LoopConnections` runs such a statement
on psycopg's asyncio connections instead, in autocommit mode, from a small pool per event loop.

Before a connection is used again it is checked without a round trip: a connection the server
closed (a restart, an idle timeout) has something to read, and is dropped. A connection whose
statement failed is closed, whatever the failure.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy import Engine

from ductal.errors import DatabaseUnavailable


class LoopConnections:
    """At most ``size`` autocommit connections per event loop to ``engine``'s database."""

    def __init__(self, engine: Engine, size: int) -> None:
        url = engine.url.set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._shown = url.render_as_string(hide_password=True)
        self._size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: asyncio.Semaphore | None = None

    async def fetch_one(self, query: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run ``query`` (psycopg placeholders) as its own transaction; return its first row."""
        async with self._slots_of_loop():
            conn = await self._connection()
            try:
                cursor = await conn.execute(query, params)
                row = await cursor.fetchone()
            except BaseException:
                await _close(conn)
                raise
            self._idle.append(conn)
        return None if row is None else tuple(row)

    def close(self) -> None:
        """Close the idle connections (at shutdown; no event loop needed)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.pgconn.finish()

    def _slots_of_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._slots is None:
            self.close()  # a connection belongs to the loop that opened it (tests run several)
            self._loop, self._slots = loop, asyncio.Semaphore(self._size)
        return self._slots

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        while self._idle:
            conn = self._idle.pop()
            if _usable(conn):
                return conn
            conn.pgconn.finish()
        try:
            return await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            raise DatabaseUnavailable(f"cannot reach the database {self._shown}: {reason}") from exc


def _usable(conn: psycopg.AsyncConnection[Any]) -> bool:
    """An idle connection is usable unless closed, broken, or holding unread data (which, on an
    idle connection, is the server's notice that it closed it)."""
    if conn.closed or conn.broken:
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return not readable


async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await conn.close()
    except psycopg.Error:
        conn.pgconn.finish()
