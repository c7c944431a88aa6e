"""Engines, sessions and migrations for SQLite and PostgreSQL.

Nothing is created at import time: callers build an engine from settings with :func:`make_engine`
and open sessions with :func:`session_scope`. The schema exists only through the Alembic
migrations shipped in ``ductal/migrations``; :func:`migrate` runs them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ductal.errors import ConfigError, DatabaseUnavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Python's sqlite3 opens transactions lazily and only for DML; turn that off so the
    # "begin" hook below decides, and a write transaction takes the lock up front.
    dbapi_connection.isolation_level = None  # (the busy timeout comes from connect_args)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # BEGIN IMMEDIATE serialises writers at the start of the transaction, so two writers never
    # both read the audit chain head and then fight to upgrade their locks.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(
    database_url: str,
    *,
    echo: bool = False,
    pooled: bool = True,
    busy_timeout: float = 30.0,
    pool_size: int | None = None,
) -> Engine:
    """Return an engine for ``database_url``; raise :class:`ConfigError` for a malformed URL.

    ``pooled=False`` closes each connection when it is released: right for one-shot commands,
    which then leave no open connection behind. ``busy_timeout`` is how long, in seconds, a
    SQLite connection waits for another one's write lock before it fails with "database is
    locked" (0: not at all). ``pool_size`` is how many connections a pooled engine keeps open
    (a server sets it to the number of requests it runs at once: beyond it, each extra
    connection is opened for one request and closed after it, which on PostgreSQL starts and
    ends a server process every time); as many again may be opened for a burst.
    """
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ConfigError(f"DUCTAL_DATABASE_URL: cannot parse {database_url!r}") from exc
    kwargs: dict[str, Any] = {"echo": echo}
    if not pooled:
        kwargs["poolclass"] = NullPool
    elif pool_size is not None:
        kwargs["pool_size"] = pool_size
        kwargs["max_overflow"] = pool_size
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
    elif url.get_backend_name() == "postgresql":
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    else:
        raise ConfigError(
            f"DUCTAL_DATABASE_URL: unsupported database {url.get_backend_name()!r} "
            "(use sqlite:/// or postgresql+psycopg://)"
        )
    try:
        engine = create_engine(url, **kwargs)
    except NoSuchModuleError as exc:
        raise ConfigError(f"DUCTAL_DATABASE_URL: no driver for {url.drivername!r}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def is_busy(exc: OperationalError) -> bool:
    """Say whether ``exc`` is SQLite refusing a lock another connection holds."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY  # extended codes too


def check_connection(engine: Engine) -> None:
    """Raise :class:`DatabaseUnavailable`, with a plain message, if the database is unreachable."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot reach the database {shown}: {reason}") from exc


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Return a session maker bound to ``engine`` (objects stay usable after commit)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn a full disk or a lost connection into :class:`DatabaseUnavailable` (503)."""
    try:
        yield
    except OperationalError as exc:
        storage = storage_failure(exc)
        if storage is None:
            raise
        raise DatabaseUnavailable(storage) from exc
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise DatabaseUnavailable(_CONNECTION_LOST) from exc


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session in one transaction: committed on success, rolled back on any error."""
    session = Session(bind=engine, expire_on_commit=False)
    try:
        with database_errors(), session.begin():
            yield session
    finally:
        session.close()


_DISK_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")
_DISK_IO = ("disk i/o error", "file too large")
_PG_DOWN = {"57P01", "57P02", "57P03"}  # shutting down, crash shutdown, cannot connect now
_GONE = (
    "connection refused",
    "server closed the connection",
    "terminating connection",
    "the database system is",  # ... starting up / shutting down / in recovery mode
    "connection failed",
)
_CONNECTION_LOST = (
    "the connection to the database was lost (it is restarting or unreachable): the change was "
    "not confirmed; check it and try again in a moment"
)


def storage_failure(exc: OperationalError) -> str | None:
    """Return a plain message when ``exc`` means the database's disk or connection failed."""
    detail = str(exc.orig or exc).lower()
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate == "53100" or any(s in detail for s in _DISK_FULL):
        return (
            "the database's disk is full: the change was not saved (nothing half-written is "
            "kept); free disk space and try again"
        )
    if (
        exc.connection_invalidated
        or (sqlstate or "").startswith("08")
        or sqlstate in _PG_DOWN
        or any(s in detail for s in _GONE)
    ):
        return _CONNECTION_LOST
    if any(s in detail for s in _DISK_IO):
        return (
            "the database could not write to its disk (I/O error or file size limit): the "
            "change was not saved; check the disk and try again"
        )
    return None


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` by running the Alembic migrations."""
    from alembic import command

    check_connection(engine)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    """Return the schema revision stored in the database, or None before ``ductal init``."""
    check_connection(engine)
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def head_revision() -> str:
    """Return the newest migration revision shipped with this version of ductal."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    if head is None:
        raise ConfigError("no migrations are shipped with this installation")
    return head


def require_schema(engine: Engine) -> None:
    """Raise :class:`ConfigError` unless the database schema is at the shipped head."""
    current = current_revision(engine)
    if current is None:
        raise ConfigError("the database has no ductal schema yet: run `ductal init` first")
    if current != head_revision():
        raise ConfigError(
            f"the database schema is at {current}, this ductal expects {head_revision()}: "
            "run `ductal init` to upgrade"
        )
