"""Tamper evidence: rows edited, deleted or reordered straight in the database are caught.

The triggers that make the table append-only are dropped first, as an attacker with database
rights would. ``ductal audit verify`` must exit 1 naming the first bad entry, and notice entries cut
off the end (the trail's head row names the newest entry). Cutting the end and moving the head
row too, or rewriting the chain with recomputed hashes, leaves a self-consistent trail, which
only an evidence stamp kept elsewhere can expose: ``ductal evidence check`` must catch those.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, delete, func, select, text, update

from ductal import audit, backup
from ductal.db import session_scope
from ductal.models import AuditEntry, AuditHead
from tests.trust.conftest import Study, build_study, run

TABLE = AuditEntry.__table__


def _disable_protection(engine: Engine) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
            conn.execute(text("DROP TRIGGER audit_entries_no_delete"))
        else:
            conn.execute(
                text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only")
            )


def _entry(engine: Engine, entry_id: int) -> AuditEntry:
    with session_scope(engine) as session:
        found = session.get(AuditEntry, entry_id)
        assert found is not None
        return found


def _last_id(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.max(AuditEntry.id))) or 0)


def _changed(column: str, entry: AuditEntry) -> Any:
    value = getattr(entry, column)
    if column == "occurred_at":
        return value + dt.timedelta(microseconds=1)
    if column in ("before", "after"):
        return {**(value or {}), "size_mm": 1.0}
    if column == "site_id":
        return (value or 0) + 1
    if column in ("prev_hash", "hash"):
        return "f" * 64 if value != "f" * 64 else "e" * 64
    return f"{value}x"


def _verify_cli(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code, out, _err = run(capsys, "audit", "verify", "--json")
    return code, json.loads(out)


COLUMNS = [
    "occurred_at",
    "actor",
    "action",
    "entity_type",
    "entity_id",
    "subject_study_id",
    "site_id",
    "before",
    "after",
    "reason",
    "prev_hash",
    "hash",
]


CASES = [
    *(pytest.param(c, "middle", id=f"{c}-middle") for c in COLUMNS),
    *(pytest.param(c, w, id=f"{c}-{w}") for c in ("reason", "hash") for w in ("first", "last")),
]


@pytest.fixture
def study(engine: Engine) -> Study:
    """A smaller study than the shared one: the chain is what matters here (~60 entries)."""
    return build_study(engine, Fernet.generate_key().decode(), n_subjects=1)


@pytest.mark.parametrize(("column", "where"), CASES)
def test_editing_any_column_of_any_entry_is_named(
    study: Study,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    column: str,
    where: str,
) -> None:
    last = _last_id(study.engine)
    target = {"first": 1, "middle": last // 2, "last": last}[where]
    entry = _entry(study.engine, target)
    _disable_protection(study.engine)
    with study.engine.begin() as conn:
        conn.execute(
            update(TABLE).where(TABLE.c.id == target).values({column: _changed(column, entry)})
        )
    code, report = _verify_cli(capsys)
    assert code == 1 and not report["ok"]
    assert report["first_bad_id"] == target, report


@pytest.mark.parametrize("where", ["first", "middle"])
def test_deleting_an_entry_is_named(
    study: Study, env: dict[str, str], capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = 1 if where == "first" else _last_id(study.engine) // 2
    _disable_protection(study.engine)
    with study.engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.id == target))
    code, report = _verify_cli(capsys)
    assert code == 1 and report["first_bad_id"] == target + 1
    assert "does not follow" in report["problem"]


def test_swapping_two_entries_is_named(
    study: Study, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    a = _last_id(study.engine) // 3
    b = 2 * a
    _disable_protection(study.engine)
    with study.engine.begin() as conn:
        conn.execute(update(TABLE).where(TABLE.c.id == a).values(id=-1))
        conn.execute(update(TABLE).where(TABLE.c.id == b).values(id=a))
        conn.execute(update(TABLE).where(TABLE.c.id == -1).values(id=b))
    code, report = _verify_cli(capsys)
    assert code == 1 and report["first_bad_id"] == a


def test_plain_text_cli_names_the_entry(
    study: Study, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "chain intact" in out
    _disable_protection(study.engine)
    with study.engine.begin() as conn:
        conn.execute(update(TABLE).where(TABLE.c.id == 7).values(reason="innocent"))
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1 and "entry 7 was altered" in err


def _rewrite_from(engine: Engine, start: int) -> None:
    """Edit entry ``start`` and recompute every hash after it, as a knowing attacker would."""
    with session_scope(engine) as session:
        entries = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    prev = audit.GENESIS_HASH
    with engine.begin() as conn:
        for e in entries:  # detached copies: changing them touches nothing stored
            if e.id == start:
                e.reason = "rewritten"
            e.prev_hash = prev
            digest = audit.entry_digest(e)
            if e.id >= start:
                conn.execute(
                    update(TABLE)
                    .where(TABLE.c.id == e.id)
                    .values(reason=e.reason, prev_hash=prev, hash=digest)
                )
            prev = digest


def _move_head(engine: Engine) -> None:
    """Point the trail's head row at its newest entry, as a knowing attacker would."""
    with engine.begin() as conn:
        newest = conn.execute(
            select(TABLE.c.id, TABLE.c.prev_hash, TABLE.c.hash, TABLE.c.occurred_at)
            .order_by(TABLE.c.id.desc())
            .limit(1)
        ).one()
        conn.execute(
            update(AuditHead.__table__).values(
                entry_id=newest.id,
                prev_hash=newest.prev_hash,
                hash=newest.hash,
                occurred_at=newest.occurred_at,
            )
        )


def test_verify_notices_entries_cut_from_the_end(
    study: Study, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _disable_protection(study.engine)
    last = _last_id(study.engine)
    with study.engine.begin() as conn:
        conn.execute(delete(TABLE).where(TABLE.c.id > last - 3))
    code, report = _verify_cli(capsys)
    assert code == 1 and report["first_bad_id"] == last - 3
    assert f"names entry {last}" in report["problem"]


@pytest.mark.parametrize("attack", ["cut-the-tail", "rewrite-chain"])
def test_a_stamp_exposes_what_the_chain_alone_cannot(
    study: Study,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    attack: str,
) -> None:
    code, out, _ = run(capsys, "evidence", "stamp")
    assert code == 0
    stamp_file = tmp_path / "stamp.json"
    stamp_file.write_text(out)
    stamp = json.loads(out)
    assert stamp["audit_entries"] == _last_id(study.engine)
    code, out, _ = run(capsys, "evidence", "check", str(stamp_file))
    assert code == 0 and out.startswith("ok")

    _disable_protection(study.engine)
    last = _last_id(study.engine)
    if attack == "cut-the-tail":
        with study.engine.begin() as conn:
            conn.execute(delete(TABLE).where(TABLE.c.id > last - 3))
    else:
        _rewrite_from(study.engine, last // 2)
    _move_head(study.engine)
    code, report = _verify_cli(capsys)
    assert code == 0 and report["ok"]  # self-consistent: the chain alone cannot tell
    code, _, err = run(capsys, "evidence", "check", str(stamp_file))
    assert code == 1 and "not in the trail" in err
    with session_scope(study.engine) as session:
        assert not backup.check_stamp(session, stamp).ok


def test_stamp_survives_later_appends(study: Study) -> None:
    with session_scope(study.engine) as session:
        stamp = backup.evidence_stamp(session)
    with session_scope(study.engine) as session:
        audit.record(session, actor="later", action="note", entity_type="test", entity_id=1)
    with session_scope(study.engine) as session:
        result = backup.check_stamp(session, stamp)
    assert result.ok and "1 added since" in result.message


def test_evidence_check_reads_an_export_manifest(
    study: Study, env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with session_scope(study.engine) as session:
        stamp = backup.evidence_stamp(session)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"format": "redcap", "evidence": stamp}))
    code, out, _ = run(capsys, "evidence", "check", str(manifest))
    assert code == 0 and out.startswith("ok: the stamped head is entry")
