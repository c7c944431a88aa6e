"""Backups and restores with a checksummed manifest, and evidence stamps of the audit chain.

A backup is two files: the dump (a SQLite database file written with SQLite's online backup API,
or a ``pg_dump --format=custom`` archive) and ``<dump>.manifest.json`` beside it, which records
what the dump holds: source kind, ductal version, schema revision, row counts per table, the
audit chain head and the SHA-256 of the dump. The counts and the chain head are read from the
same snapshot the dump was taken from, so a restore can be compared against them exactly.

:func:`evidence_stamp` gives the chain head, entry count and time to print in reports and export
manifests; :func:`check_stamp` later proves that the trail still contains that head at that
position (which :func:`ductal.audit.verify_chain` alone cannot: it sees entries cut off the
end of the trail only while the head row still names the old end, and never a trail rewritten
with every later hash recomputed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess  # nosec B404 - runs pg_dump/pg_restore with fixed argument lists, no shell
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, func, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from ductal import __version__, audit
from ductal.db import make_engine, session_scope
from ductal.errors import Conflict, DuctalError, NotFound, ValidationError
from ductal.models import AuditEntry, utcnow

MANIFEST_FORMAT = 1
MANIFEST_SUFFIX = ".manifest.json"
_CHUNK = 1 << 20


class BackupError(DuctalError):
    """A backup or restore could not be made, or did not check out."""

    status = 500
    code = "backup_error"


# --- evidence stamps -------------------------------------------------------------------------


def evidence_stamp(session: Session) -> dict[str, Any]:
    """Return the audit chain head, its entry count and the UTC time, to print beside evidence.

    Put it in every report and export manifest: anyone holding the copy can later run
    :func:`check_stamp` (``ductal audit verify`` plus the head) against the live database.
    """
    head = audit.chain_head(session)
    count = 0
    if head is not None:
        count = int(
            session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.id <= head.id)
            )
            or 0
        )
    return {
        "audit_chain_head": head.hash if head is not None else audit.GENESIS_HASH,
        "audit_head_id": head.id if head is not None else None,
        "audit_entries": count,
        "stamped_at": utcnow().isoformat(timespec="seconds"),
    }


@dataclass(frozen=True)
class StampCheck:
    """What :func:`check_stamp` found."""

    ok: bool
    message: str
    chain: audit.ChainReport


def check_stamp(session: Session, stamp: Mapping[str, Any]) -> StampCheck:
    """Return whether the trail still verifies and still holds ``stamp``'s head at its position."""
    chain = audit.verify_chain(session)
    if not chain.ok:
        return StampCheck(False, f"audit chain broken: {chain.problem}", chain)
    head_hash = str(stamp.get("audit_chain_head", ""))
    wanted = int(stamp.get("audit_entries", 0))
    if wanted == 0:
        return StampCheck(True, "ok: the stamp predates every audit entry", chain)
    entry = session.scalar(select(AuditEntry).where(AuditEntry.hash == head_hash))
    if entry is None:
        return StampCheck(
            False,
            f"the stamped chain head {head_hash[:16]}… is not in the trail: entries were removed "
            "from the end or the trail was rewritten",
            chain,
        )
    position = int(
        session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.id <= entry.id)
        )
        or 0
    )
    if position != wanted:
        return StampCheck(
            False,
            f"the stamped chain head is entry {position} of the trail, the stamp says {wanted}",
            chain,
        )
    return StampCheck(
        True,
        f"ok: the stamped head is entry {wanted}; {chain.entries - wanted} added since",
        chain,
    )


# --- manifests -------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a backup holds; written as JSON beside the dump."""

    kind: str
    dump_file: str
    sha256: str
    size_bytes: int
    ductal_version: str
    schema_revision: str | None
    created_at: str
    row_counts: dict[str, int]
    audit_entries: int
    audit_chain_head: str
    audit_chain_ok: bool
    format: int = MANIFEST_FORMAT
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: Path) -> Manifest:
        try:
            raw = json.loads(path.read_text())
            return cls(**raw)
        except FileNotFoundError:
            raise NotFound(f"no manifest {path} beside the backup") from None
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"the manifest {path} is not a ductal backup manifest") from exc


def manifest_path(dump: Path) -> Path:
    """Return where the manifest of ``dump`` lives."""
    return dump.with_name(dump.name + MANIFEST_SUFFIX)


def file_sha256(path: Path) -> str:
    """Return the hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _tables(conn: Connection) -> list[str]:
    return sorted(inspect(conn).get_table_names())


def _quoted(conn: Connection, table: str) -> str:
    return conn.dialect.identifier_preparer.quote(table)


def row_counts(conn: Connection) -> dict[str, int]:
    """Return the number of rows of every table, by name."""
    return {
        t: int(conn.execute(text(f"SELECT count(*) FROM {_quoted(conn, t)}")).scalar_one())  # nosec B608 - table names come from the schema, quoted
        for t in _tables(conn)
    }


def _schema_revision(conn: Connection) -> str | None:
    if "alembic_version" not in _tables(conn):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def _chain_on(conn: Connection) -> audit.ChainReport:
    with Session(bind=conn) as session:
        return audit.verify_chain(session)


# --- SQLite -------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise ValidationError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database)


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy ``source`` into ``target`` page by page with SQLite's online backup API."""
    # The backup API takes a consistent snapshot while other connections keep writing.
    with (
        closing(sqlite3.connect(source, timeout=30)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it


def _integrity(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _describe_sqlite(dump: Path) -> tuple[dict[str, int], str | None, audit.ChainReport]:
    # a plain engine: ductal's own would switch the copy back to WAL and take write locks
    engine = create_engine(f"sqlite:///{dump}")
    try:
        with engine.connect() as conn:
            return row_counts(conn), _schema_revision(conn), _chain_on(conn)
    finally:
        engine.dispose()


# --- PostgreSQL ---------------------------------------------------------------------------


def _pg_env(url: URL) -> dict[str, str]:
    """Return the environment that points libpq tools at ``url`` (password kept off argv)."""
    env = dict(os.environ)
    for var, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.username),
        ("PGPASSWORD", url.password),
        ("PGDATABASE", url.database),
    ):
        if value is not None:
            env[var] = str(value)
    return env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not installed (it comes with the PostgreSQL client tools)")
    return found


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # nosec B603 - fixed argv, no shell
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BackupError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else 'no output'}")


# --- backup ---------------------------------------------------------------------------------


def backup(database_url: str, out: Path) -> Manifest:
    """Write a consistent backup of ``database_url`` to ``out`` and its manifest; return it."""
    url = make_url(database_url)
    out = out.expanduser().resolve()
    if out.exists() or manifest_path(out).exists():
        raise Conflict(f"{out} already exists; choose a new file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    tmp.unlink(missing_ok=True)
    try:
        if url.get_backend_name() == "sqlite":
            source = _sqlite_path(url)
            if not source.exists():
                raise NotFound(f"no database file {source}")
            _sqlite_copy(source, tmp)
            counts, revision, chain = _describe_sqlite(tmp)
            kind = "sqlite"
        elif url.get_backend_name() == "postgresql":
            counts, revision, chain = _pg_dump(database_url, url, tmp)
            kind = "postgresql"
        else:
            raise ValidationError(f"cannot back up a {url.get_backend_name()} database")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = Manifest(
        kind=kind,
        dump_file=out.name,
        sha256=file_sha256(out),
        size_bytes=out.stat().st_size,
        ductal_version=__version__,
        schema_revision=revision,
        created_at=utcnow().isoformat(timespec="seconds"),
        row_counts=counts,
        audit_entries=chain.entries,
        audit_chain_head=chain.head,
        audit_chain_ok=chain.ok,
        notes=[] if chain.ok else [f"the audit chain was already broken: {chain.problem}"],
    )
    manifest_path(out).write_text(manifest.to_json())
    return manifest


def _pg_dump(
    database_url: str, url: URL, tmp: Path
) -> tuple[dict[str, int], str | None, audit.ChainReport]:
    pg_dump = _tool("pg_dump")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            # Count rows and walk the chain in the very snapshot pg_dump will dump.
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            snapshot = str(conn.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            counts = row_counts(conn)
            revision = _schema_revision(conn)
            chain = _chain_on(conn)
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--file={tmp}",
                ],
                _pg_env(url),
            )
            conn.rollback()
    finally:
        engine.dispose()
    return counts, revision, chain


# --- restore --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreReport:
    """What :func:`restore` did and checked."""

    manifest: Manifest
    target: str
    row_counts: dict[str, int]
    chain: audit.ChainReport


def verify_backup(dump: Path) -> Manifest:
    """Return the manifest of ``dump`` after checking the dump's size and SHA-256 against it."""
    dump = dump.expanduser().resolve()
    if not dump.exists():
        raise NotFound(f"no backup file {dump}")
    manifest = Manifest.from_file(manifest_path(dump))
    if manifest.format != MANIFEST_FORMAT:
        raise ValidationError(f"manifest format {manifest.format} is not supported")
    actual = file_sha256(dump)
    if actual != manifest.sha256:
        raise BackupError(
            f"{dump.name} does not match its manifest (SHA-256 {actual[:16]}…, expected "
            f"{manifest.sha256[:16]}…): the file is damaged or was changed; do not restore it"
        )
    if manifest.kind == "sqlite":
        result = _integrity(dump)
        if result != "ok":
            raise BackupError(f"{dump.name} fails SQLite's integrity check: {result}")
    else:  # the archive's table of contents must read back
        _run([_tool("pg_restore"), "--list", str(dump)], dict(os.environ))
    return manifest


def _holds_data(engine: Engine) -> bool:
    with engine.connect() as conn:
        counts = row_counts(conn)
    return any(n for t, n in counts.items() if t != "alembic_version")


@contextmanager
def _engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def restore(dump: Path, target_url: str, *, force: bool = False) -> RestoreReport:
    """Restore ``dump`` into ``target_url`` after verifying it; compare counts and the chain after.

    A target that holds any rows is refused unless ``force``; its contents are then replaced.
    """
    dump = dump.expanduser().resolve()
    manifest = verify_backup(dump)
    url = make_url(target_url)
    if url.get_backend_name() != manifest.kind:
        raise ValidationError(
            f"this is a {manifest.kind} backup; restore it into a {manifest.kind} database, "
            f"not {url.get_backend_name()}"
        )
    shown = url.render_as_string(hide_password=True)
    with _engine(target_url) as engine:
        exists = manifest.kind == "postgresql" or _sqlite_path(url).exists()
        if exists and _holds_data(engine) and not force:
            raise Conflict(f"{shown} already holds data; restore into an empty database or --force")
    if manifest.kind == "sqlite":
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        _sqlite_copy(dump, target)
    else:
        _run(
            [
                _tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={url.database}",
                str(dump),
            ],
            _pg_env(url),
        )
    with _engine(target_url) as engine, engine.connect() as conn:
        counts = row_counts(conn)
        chain = _chain_on(conn)
    problems = [
        f"{t}: {counts.get(t)} rows, the backup had {n}"
        for t, n in sorted(manifest.row_counts.items())
        if counts.get(t) != n
    ]
    if chain.head != manifest.audit_chain_head or chain.entries != manifest.audit_entries:
        problems.append(
            f"audit trail: {chain.entries} entries ending {chain.head[:16]}…, the backup had "
            f"{manifest.audit_entries} ending {manifest.audit_chain_head[:16]}…"
        )
    if manifest.audit_chain_ok and not chain.ok:
        problems.append(f"audit chain broken after restore: {chain.problem}")
    if problems:
        raise BackupError(f"the restored database {shown} does not match the backup: {problems}")
    return RestoreReport(manifest=manifest, target=shown, row_counts=counts, chain=chain)


def stamp_database(database_url: str) -> dict[str, Any]:
    """Return :func:`evidence_stamp` for the database at ``database_url``."""
    with _engine(database_url) as engine, session_scope(engine) as session:
        return evidence_stamp(session)
