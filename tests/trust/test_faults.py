"""Faults: a writer killed with SIGKILL mid-burst, and a writer that runs out of disk.

Every save the writer acknowledged (after its commit returned) must be stored; nothing
half-written may be visible (each form record has exactly the audit entries its version implies,
and every audited record exists); SQLite's integrity check and the audit chain must pass.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from ductal import audit, forms, records
from ductal.db import session_scope, storage_failure
from ductal.models import AuditEntry, FormRecord
from tests.trust.conftest import Study

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Acks:
    versions: dict[int, int] = field(default_factory=dict)  # record id -> last acked version
    count: int = 0
    inside: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def read(self, line: str) -> None:
        parts = line.split()
        if not parts:
            return
        if parts[0] == "ack":
            self.versions[int(parts[2])] = int(parts[3])
            self.count += 1
        elif parts[0] == "inside":
            self.inside.append(int(parts[1]))
        elif parts[0] == "error":
            self.errors.append(line[len("error ") :])


def _spawn(url: str, study_id: str, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.trust._writer", url, study_id, str(count), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def check_nothing_lost_or_half_written(engine: Engine, study_id: str, acks: Acks) -> int:
    """Assert the stored forms match the acknowledgements; return how many saves were unacked."""
    with session_scope(engine) as session:
        subject = records.get_subject(session, study_id)
        stored = {r.id: r.version for r in records.subject_records(session, subject)}
        form_entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.entity_type == "form_record",
                AuditEntry.subject_study_id == study_id,
            )
        ).all()
        chain = audit.verify_chain(session)
        burst = {
            r.id
            for r in session.scalars(
                select(FormRecord).where(
                    FormRecord.subject_id == subject.id, FormRecord.form_key == "adverse_event"
                )
            )
        }
    assert chain.ok, chain.problem
    # every acknowledged write is there, at least at the acknowledged version
    for record_id, version in acks.versions.items():
        assert record_id in stored, f"acknowledged record {record_id} was lost"
        assert stored[record_id] >= version, f"record {record_id} went back to an older version"
    # no half-written save: audit entries and records agree one to one
    creates = Counter(int(e.entity_id) for e in form_entries if e.action == "create")
    updates = Counter(int(e.entity_id) for e in form_entries if e.action == "update")
    for record_id, version in stored.items():
        assert creates[record_id] == 1, f"record {record_id} has {creates[record_id]} creations"
        assert updates[record_id] == version - 1, f"record {record_id}: version/audit mismatch"
    assert set(creates) <= set(stored), "an audited record is missing"
    # at most the one save in flight when the fault struck committed without its ack
    unacked = sum(1 for r in burst if r not in acks.versions) + sum(
        stored[r] - v for r, v in acks.versions.items()
    )
    assert 0 <= unacked <= 1
    return unacked


def _sqlite_ok(url: str) -> None:
    path = make_url(url).database
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_sigkill_mid_burst_loses_no_acknowledged_write(study: Study, database_url: str) -> None:
    study.engine.dispose()
    child = _spawn(database_url, study.known_study_id, 10_000)
    acks = Acks()
    assert child.stdout is not None
    for line in child.stdout:
        acks.read(line)
        if acks.count >= 25:
            break
    assert child.poll() is None, "the writer finished before it could be killed mid-burst"
    child.send_signal(signal.SIGKILL)
    rest, _err = child.communicate(timeout=30)
    for line in rest.splitlines():
        acks.read(line)
    assert child.returncode == -signal.SIGKILL
    check_nothing_lost_or_half_written(study.engine, study.known_study_id, acks)
    if study.engine.dialect.name == "sqlite":
        _sqlite_ok(database_url)


@pytest.mark.slow
def test_sigkill_between_flush_and_commit_leaves_nothing(study: Study, database_url: str) -> None:
    study.engine.dispose()
    child = _spawn(database_url, study.known_study_id, 100, "--pause-at", "7")
    acks = Acks()
    assert child.stdout is not None
    for line in child.stdout:
        acks.read(line)
        if acks.inside and acks.inside[-1] == 7:
            break
    child.send_signal(signal.SIGKILL)
    rest, _err = child.communicate(timeout=30)
    for line in rest.splitlines():
        acks.read(line)
    assert acks.count == 7  # saves 0..6 committed and acknowledged; save 7 was in flight
    # the flushed but uncommitted save 7 must not be visible: nothing beyond the acks is stored
    assert check_nothing_lost_or_half_written(study.engine, study.known_study_id, acks) == 0
    if study.engine.dialect.name == "sqlite":
        _sqlite_ok(database_url)


@pytest.mark.slow
def test_full_disk_gives_clear_error_and_no_corruption(study: Study, database_url: str) -> None:
    if study.engine.dialect.name != "sqlite":
        pytest.skip("a file-size limit only binds the writing process: SQLite writes itself")
    study.engine.dispose()
    path = Path(str(make_url(database_url).database))
    sizes = [p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    limit = max(sizes) + 96 * 1024
    child = _spawn(database_url, study.known_study_id, 100_000, "--fsize-limit", str(limit))
    out, err = child.communicate(timeout=120)
    acks = Acks()
    for line in out.splitlines():
        acks.read(line)
    assert "Traceback" not in err, err
    assert child.returncode == 3, (out[-500:], err[-2000:])
    assert acks.count > 0, "the limit left no room for even one save"
    assert len(acks.errors) == 1
    assert "disk" in acks.errors[0] and "not saved" in acks.errors[0]
    _sqlite_ok(database_url)
    check_nothing_lost_or_half_written(study.engine, study.known_study_id, acks)
    # once space is back, writing works again
    with session_scope(study.engine) as session:
        subject = records.get_subject(session, study.known_study_id)
        forms.save_form(
            session,
            subject=subject,
            form_key="adverse_event",
            event_key="unscheduled",
            data={
                "term": "after the disk was freed",
                "onset_date": "2020-03-11",
                "ctcae_grade": 1,
                "serious": 0,
                "relatedness": "unrelated",
            },
            actor="writer",
        )
    with session_scope(study.engine) as session:
        assert audit.verify_chain(session).ok


class _PgError(Exception):
    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("orig", "wording"),
    [
        pytest.param(Exception("database or disk is full"), "disk is full", id="sqlite-full"),
        pytest.param(Exception("disk I/O error"), "could not write", id="sqlite-io"),
        pytest.param(_PgError("could not extend file", "53100"), "disk is full", id="pg-full"),
        pytest.param(
            _PgError("terminating connection due to administrator command", "57P01"),
            "connection to the database was lost",
            id="pg-restart",
        ),
        pytest.param(_PgError("connection refused", None), "was lost", id="pg-down"),
        pytest.param(Exception("no such table: x"), None, id="other"),
    ],
)
def test_storage_failures_get_a_plain_message(orig: Exception, wording: str | None) -> None:
    message = storage_failure(OperationalError("INSERT ...", {}, orig))
    if wording is None:
        assert message is None
    else:
        assert message is not None and wording in message


def test_the_fault_checks_catch_a_lost_acknowledgement(study: Study) -> None:
    lost = Acks(versions={987654: 1}, count=1)
    with pytest.raises(AssertionError, match="987654 was lost"):
        check_nothing_lost_or_half_written(study.engine, study.known_study_id, lost)
