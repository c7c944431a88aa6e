"""Shared fixtures: a fresh, migrated database per test on SQLite and (when configured) PostgreSQL.

Set ``DUCTAL_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``)
to run every database test on PostgreSQL as well. Each test gets its own database: a copy of a
migrated SQLite file, or a PostgreSQL database cloned from a migrated template.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from ductal.db import make_engine, migrate
from ductal.vault import Vault

POSTGRES_URL = os.environ.get("DUCTAL_TEST_POSTGRES_URL", "").strip()
BACKENDS = ["sqlite", *(["postgresql"] if POSTGRES_URL else [])]
_counter = itertools.count()


def _worker(request: pytest.FixtureRequest) -> str:
    return str(getattr(request.config, "workerinput", {}).get("workerid", "main"))


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ductal.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # closing the last connection checkpoints the WAL into the main file
    assert not path.with_name(path.name + "-wal").exists()
    return path


def _admin_engine() -> Engine:
    url = make_url(POSTGRES_URL).set(database="postgres")
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def _postgres_template(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"ductal_tmpl_{_worker(request)}_{os.getpid()}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(make_url(POSTGRES_URL).set(database=name).render_as_string(False))
    migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def _postgres_database(request: pytest.FixtureRequest, template: str | None) -> Iterator[str]:
    """Create a PostgreSQL database (a copy of ``template``, or empty), yield its URL, drop it."""
    name = f"ductal_t_{_worker(request)}_{os.getpid()}_{next(_counter)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a fresh, migrated, empty database of each configured kind."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("_sqlite_template")
        path = tmp_path / "ductal.sqlite"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    with _postgres_database(request, request.getfixturevalue("_postgres_template")) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def blank_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new database of each configured kind with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.sqlite'}"
        return
    with _postgres_database(request, None) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """Yield an engine on a fresh migrated database."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def vault() -> Vault:
    return Vault(Fernet.generate_key().decode())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> dict[str, str]:
    """Point ductal's settings at a temporary data directory and the test database."""
    values = {
        "DUCTAL_ENV": "development",
        "DUCTAL_DATA_DIR": str(tmp_path / "data"),
        "DUCTAL_DATABASE_URL": database_url,
    }
    for key in ("DUCTAL_SECRET_KEY", "DUCTAL_VAULT_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values
