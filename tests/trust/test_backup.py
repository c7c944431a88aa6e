"""Backups: online backup with a manifest, verified restore, every row compared, chain checked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from ductal import audit, backup
from ductal.db import make_engine, session_scope
from ductal.errors import Conflict, ValidationError
from tests.trust.conftest import Study, run


def all_rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table, ordered by primary key (or by every column)."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        insp = inspect(conn)
        for table in sorted(insp.get_table_names()):
            cols = [c["name"] for c in insp.get_columns(table)]
            keys = insp.get_pk_constraint(table)["constrained_columns"] or cols
            quote = conn.dialect.identifier_preparer.quote
            order = ", ".join(quote(k) for k in keys)
            rows = conn.execute(text(f"SELECT * FROM {quote(table)} ORDER BY {order}"))
            out[table] = [tuple(r) for r in rows]
    return out


@pytest.fixture
def empty_target(database_url: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a database that does not exist yet (SQLite) or is empty (PostgreSQL)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'ductal.sqlite'}"
        return
    name = f"{url.database}_restored"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_backup_restore_every_row(
    study: Study, database_url: str, empty_target: str, tmp_path: Path
) -> None:
    dump = tmp_path / "backups" / "study.dump"
    manifest = backup.backup(database_url, dump)
    saved = json.loads(backup.manifest_path(dump).read_text())
    assert saved["sha256"] == backup.file_sha256(dump) == manifest.sha256
    assert saved["kind"] == study.engine.dialect.name
    assert saved["row_counts"]["identities"] == 5 and saved["audit_chain_ok"]
    with session_scope(study.engine) as session:
        assert saved["audit_chain_head"] == audit.verify_chain(session).head

    report = backup.restore(dump, empty_target)
    restored = make_engine(empty_target)
    try:
        assert all_rows(restored) == all_rows(study.engine)
        with session_scope(restored) as session:
            chain = audit.verify_chain(session)
        assert chain.ok and chain.head == manifest.audit_chain_head
        assert report.row_counts == manifest.row_counts
    finally:
        restored.dispose()


def test_restore_refuses_a_target_with_data_unless_forced(
    study: Study, database_url: str, tmp_path: Path
) -> None:
    dump = tmp_path / "study.dump"
    backup.backup(database_url, dump)
    with session_scope(study.engine) as session:
        audit.record(session, actor="later", action="note", entity_type="test", entity_id=1)
    with pytest.raises(Conflict, match="already holds data"):
        backup.restore(dump, database_url)
    study.engine.dispose()
    report = backup.restore(dump, database_url, force=True)  # back to the backed-up state
    assert report.chain.ok and report.chain.entries == report.manifest.audit_entries


def test_damaged_backup_is_refused_before_anything_is_written(
    study: Study, database_url: str, empty_target: str, tmp_path: Path
) -> None:
    dump = tmp_path / "study.dump"
    backup.backup(database_url, dump)
    blob = bytearray(dump.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    dump.write_bytes(bytes(blob))
    with pytest.raises(backup.BackupError, match="does not match its manifest"):
        backup.restore(dump, empty_target)
    if make_url(empty_target).get_backend_name() == "sqlite":
        assert not Path(str(make_url(empty_target).database)).exists()
    else:
        target = make_engine(empty_target)
        with target.connect() as conn:
            assert inspect(conn).get_table_names() == []
        target.dispose()


def test_restore_checks_the_database_kind(study: Study, database_url: str, tmp_path: Path) -> None:
    dump = tmp_path / "study.dump"
    backup.backup(database_url, dump)
    other = (
        "postgresql+psycopg://postgres@127.0.0.1:5432/none"
        if study.engine.dialect.name == "sqlite"
        else f"sqlite:///{tmp_path / 'x.sqlite'}"
    )
    with pytest.raises(ValidationError, match="backup; restore it into a"):
        backup.restore(dump, other)


def test_online_backup_is_consistent_while_others_write(
    study: Study, database_url: str, empty_target: str, tmp_path: Path
) -> None:
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        engine = make_engine(database_url)
        try:
            while not stop.is_set():
                with session_scope(engine) as session:
                    entry = audit.record(
                        session, actor="busy", action="note", entity_type="test", entity_id=1
                    )
                    written.append(entry.id)
        finally:
            engine.dispose()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            threading.Event().wait(0.01)
        manifest = backup.backup(database_url, tmp_path / "busy.dump")
        wrote_during = len(written)
    finally:
        stop.set()
        thread.join()
    assert wrote_during >= 20
    report = backup.restore(tmp_path / "busy.dump", empty_target)
    # the dump, its counts and its chain head are one snapshot, whatever was written meanwhile
    assert report.chain.ok and report.row_counts == manifest.row_counts
    assert report.chain.head == manifest.audit_chain_head


def test_cli_backup_and_restore(
    study: Study,
    env: dict[str, str],
    empty_target: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dump = tmp_path / "cli.dump"
    code, out, _ = run(capsys, "backup", "--out", str(dump))
    assert code == 0 and "chain head" in out
    code, out, _ = run(capsys, "restore", str(dump), "--check-only")
    assert code == 0 and "matches its manifest" in out
    code, out, _ = run(capsys, "restore", str(dump), "--to", empty_target)
    assert code == 0 and "counts match the manifest" in out
    code, _, err = run(capsys, "backup", "--out", str(dump))
    assert code == 1 and "already exists" in err
    code, _, err = run(capsys, "restore", str(dump), "--to", empty_target)
    assert code == 1 and "already holds data" in err
