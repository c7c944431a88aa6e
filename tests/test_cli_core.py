"""The core commands end to end: init, demo, subjects list, audit verify, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from ductal import accounts
from ductal.cli import main
from ductal.db import make_engine, session_scope


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``ductal ARGS`` in-process and return (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("ductal ")
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("init", "demo", "subjects", "protocols", "audit", "stats", "design"):
        assert command in out


def test_commands_before_init_say_so(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    engine = make_engine(env["DUCTAL_DATABASE_URL"])
    with engine.begin() as conn:  # the fixture's database is migrated; simulate a blank one
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    code, _, err = run(capsys, "subjects", "list")
    assert code == 1
    assert err.strip() == "error: the database has no ductal schema yet: run `ductal init` first"


def test_demo_then_inspect_and_verify(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "init")
    assert code == 0 and "up to date" in out, err
    code, out, err = run(capsys, "demo", "--patients", "6", "--seed", "7")
    assert code == 0, err
    assert "ductal audit verify" in out
    code, out, _ = run(capsys, "subjects", "list", "--json")
    rows = json.loads(out)
    assert len(rows) == 18
    assert {r["protocol"] for r in rows} == {
        "lavage-observational",
        "lavage-vs-steroid-ni",
        "refractory-igm-adaptive",
    }
    code, out, _ = run(capsys, "subjects", "list", "--protocol", "lavage-observational")
    assert code == 0 and out.strip().endswith("6 subject(s)")
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and out.startswith("ok: ")
    # a second demo on the same database is refused, not doubled
    code, _, err = run(capsys, "demo", "--patients", "2")
    assert code == 1 and "already holds subjects" in err


def test_audit_verify_fails_on_tampering(
    env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "demo", "--patients", "2")[0] == 0
    engine = make_engine(env["DUCTAL_DATABASE_URL"])
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER audit_entries_no_update"))
        else:
            conn.execute(
                text("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_append_only")
            )
        conn.execute(text("UPDATE audit_entries SET actor = 'mallory' WHERE id = 5"))
    engine.dispose()
    code, _, err = run(capsys, "audit", "verify")
    assert code == 1
    assert "entry 5 was altered" in err
    code, out, _ = run(capsys, "audit", "verify", "--json")
    assert code == 1 and json.loads(out)["first_bad_id"] == 5


def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DUCTAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DUCTAL_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    code, out, err = run(capsys, "audit", "verify")
    assert code == 1 and out == ""
    assert err.startswith(
        "error: cannot reach the database postgresql+psycopg://nobody@127.0.0.1:1/none"
    )
    assert len(err.strip().splitlines()) == 1


def test_demo_reset_rebuilds_but_never_deletes_real_data(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DUCTAL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DUCTAL_DATABASE_URL", raising=False)
    assert run(capsys, "demo", "--patients", "2")[0] == 0
    assert run(capsys, "demo", "--patients", "3", "--reset")[0] == 0
    code, out, _ = run(capsys, "subjects", "list", "--json")
    assert code == 0 and len(json.loads(out)) == 9
    engine = make_engine(f"sqlite:///{tmp_path / 'ductal.sqlite'}")
    with session_scope(engine) as session:
        accounts.create_site(session, code="REAL", name="A real site", actor="alice")
    engine.dispose()
    code, _, err = run(capsys, "demo", "--reset")
    assert code == 1 and "--reset refused" in err
    code, out, _ = run(capsys, "subjects", "list", "--json")
    assert len(json.loads(out)) == 9


def test_demo_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.fernet import Fernet

    monkeypatch.setenv("DUCTAL_ENV", "production")
    monkeypatch.setenv("DUCTAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DUCTAL_SECRET_KEY", "s" * 40)
    monkeypatch.setenv("DUCTAL_VAULT_KEY", Fernet.generate_key().decode())
    code, _, err = run(capsys, "demo", "--patients", "1")
    assert code == 1 and "refused with DUCTAL_ENV=production" in err
    assert not (tmp_path / "ductal.sqlite").exists()
