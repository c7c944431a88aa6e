"""Identifiers at rest: a known synthetic name is nowhere in the raw database or in any export.

The search looks for the name, hospital record number and phone number as UTF-8, UTF-16 (both
byte orders) and case-folded, in the raw SQLite file with its -wal and -shm files, in PostgreSQL's
own data files and a plain-SQL ``pg_dump``, in a ``ductal backup`` dump, and in every file of every
export format. A positive control (a site name that is stored in clear) proves each search can see.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from ductal import backup
from ductal.db import session_scope
from ductal.models import Identity
from tests.trust.conftest import KNOWN_NAME, KNOWN_PHONE, KNOWN_RECORD_NUMBER, Study

SECRETS = (KNOWN_NAME, KNOWN_RECORD_NUMBER, KNOWN_PHONE)
CONTROL = "Riverside"  # a site name: stored in clear, so every search must find it


def _forms(value: str) -> list[bytes]:
    variants = {value, value.lower(), value.upper()}
    return [v.encode(enc) for v in variants for enc in ("utf-8", "utf-16-le", "utf-16-be")]


def leaks(blobs: Iterable[bytes], values: Iterable[str] = SECRETS) -> list[str]:
    """Return which of ``values`` occur, in any encoding, in any of ``blobs``."""
    found = []
    data = list(blobs)
    for value in values:
        if any(form in blob for blob in data for form in _forms(value)):
            found.append(value)
    return found


def _files(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()]


def _sqlite_files(url: str) -> list[bytes]:
    path = Path(str(make_url(url).database))
    return [p.read_bytes() for p in path.parent.glob(path.name + "*")]


def _pg_env(url: str) -> dict[str, str]:
    u = make_url(url)
    return {**os.environ, "PGHOST": str(u.host), "PGPORT": str(u.port or 5432),
            "PGUSER": str(u.username), "PGDATABASE": str(u.database)}  # fmt: skip


def _pg_raw_files(engine: Engine) -> list[bytes] | None:
    """Return the bytes of this database's own files, or None when they cannot be read here."""
    with engine.connect() as conn:
        conn.execute(text("CHECKPOINT"))  # push every page from shared buffers into the files
        data_dir = conn.execute(text("SHOW data_directory")).scalar_one()
        oid = conn.execute(
            text("SELECT oid FROM pg_database WHERE datname = current_database()")
        ).scalar_one()
    folder = Path(data_dir) / "base" / str(oid)
    try:
        return _files(folder)
    except PermissionError:
        return None


def test_the_search_finds_a_name_stored_in_clear(study: Study, database_url: str) -> None:
    """If identities were stored unencrypted, the raw-file search below would catch it."""
    with study.engine.begin() as conn:
        conn.execute(
            Identity.__table__.update()
            .where(Identity.__table__.c.id == 1)
            .values(ciphertext=f'{{"name": "{KNOWN_NAME}"}}'.encode())
        )
    if study.engine.dialect.name == "sqlite":
        blobs = _sqlite_files(database_url)
    else:
        raw = _pg_raw_files(study.engine)
        if raw is None:
            pytest.skip("PostgreSQL's data files are not readable by this user")
        blobs = raw
    assert leaks(blobs) == [KNOWN_NAME]


def test_raw_database_holds_no_identifier(study: Study, database_url: str, tmp_path: Path) -> None:
    if study.engine.dialect.name == "sqlite":
        blobs = _sqlite_files(database_url)  # the live files, WAL included, engine still open
        assert any(p for p in blobs)
        study.engine.dispose()
        blobs += _sqlite_files(database_url)  # and after the WAL is checkpointed into the file
    else:
        plain = subprocess.run(
            [shutil.which("pg_dump") or "pg_dump", "--format=plain"],
            env=_pg_env(database_url),
            capture_output=True,
            check=True,
        ).stdout
        blobs = [plain]
        raw = _pg_raw_files(study.engine)
        blobs += raw or []
    assert leaks(blobs, [CONTROL]) == [CONTROL]
    assert leaks(blobs) == []
    dump = tmp_path / "backup.dump"
    backup.backup(database_url, dump)
    assert leaks([dump.read_bytes(), backup.manifest_path(dump).read_bytes()]) == []


def test_every_export_holds_no_identifier(study: Study, tmp_path: Path) -> None:
    api = pytest.importorskip("ductal.exchange.api")
    out = tmp_path / "exports"
    made: list[str] = []
    with session_scope(study.engine) as session:
        rng = np.random.default_rng(np.random.SeedSequence(7))
        proto = "lavage-observational"
        api.export_redcap(session, protocol_id=proto, out=out / "redcap", rng=rng)
        made.append("redcap")
        api.export_odm(
            session, protocol_id=proto, out=out / "odm" / "study.xml", include_audit=True, rng=rng
        )
        made.append("odm")
        api.export_fhir(session, protocol_id=proto, out=out / "fhir", rng=rng)
        made.append("fhir")
        for fmt in ("sas", "spss", "stata", "csv"):
            api.export_stat(session, protocol_id=proto, out=out / fmt, fmt=fmt, rng=rng)
            made.append(fmt)
    for name in made:
        blobs = _files(out / name)
        assert blobs, f"the {name} export wrote nothing"
        assert leaks(blobs) == [], f"the {name} export holds an identifier"
    # the control: the study ids are in the exports unless ids are hashed, the site in REDCap
    assert leaks(_files(out / "redcap"), [CONTROL.upper()[:3]]) == ["RIV"]
