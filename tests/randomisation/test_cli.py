"""``ductal randomise``, ``ductal allocation …`` and ``ductal design interim`` end to end."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ductal.cli import main
from ductal.db import make_engine, session_scope
from tests.randomisation.conftest import ADAPTIVE, NI, enrolled, set_up_study


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``ductal ARGS`` in-process and return (exit code, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def db(env: dict[str, str]) -> Iterator[Engine]:
    engine = make_engine(env["DUCTAL_DATABASE_URL"])
    yield set_up_study(engine)
    engine.dispose()


def _enrol(engine: Engine, protocol_id: str, n: int) -> list[str]:
    with session_scope(engine) as session:
        return [enrolled(session, protocol_id).study_id for _ in range(n)]


def test_randomise_prints_the_arm_once_and_refuses_a_second_time(
    db: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _enrol(db, NI, 2)
    code, out, err = run(capsys, "randomise", first, "--actor", "coord")
    assert code == 0, err
    assert out.startswith(f"{first} randomised to ")
    assert "stratum severity=mild" in out and "position 1" in out
    code, out, err = run(capsys, "randomise", second, "--actor", "coord", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["study_id"] == second and data["position"] == 2
    assert data["arm"] in ("lavage", "steroid")
    code, out, err = run(capsys, "randomise", first)
    assert code == 1
    assert err.strip() == f"error: subject {first} is already randomised"
    code, _, err = run(capsys, "randomise", "NIL-9999")
    assert code == 1 and "no subject" in err


def test_allocation_status_export_and_unblind(
    db: Engine, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = run(
        capsys, "allocation", "generate", "-p", NI, "--role", "coordinator", "--seed", "5"
    )
    assert code == 1 and "only the unblinded statistician" in err
    code, out, err = run(
        capsys, "allocation", "generate", "-p", NI, "--role", "statistician", "--seed", "5"
    )
    assert code == 0, err
    assert "severity=mild" in out and "severity=severe" in out
    (subject,) = _enrol(db, NI, 1)
    code, out, _ = run(capsys, "randomise", subject, "--json")
    arm = json.loads(out)["arm"]

    code, out, err = run(capsys, "allocation", "status", "-p", NI, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert [(s["stratum"], s["used"]) for s in status["lists"]] == [
        ("severity=mild", 1),
        ("severity=severe", 0),
    ]
    # the status never shows arms
    assert all("arm" not in s for s in status["lists"])
    assert '"lavage"' not in out and '"steroid"' not in out

    code, _, err = run(capsys, "allocation", "export", "-p", NI, "--role", "statistician")
    assert code == 1 and "concealed" in err
    target = tmp_path / "list.csv"
    code, out, err = run(
        capsys,
        "allocation",
        "export",
        "-p",
        NI,
        "--role",
        "statistician",
        "--unblinded",
        "--out",
        str(target),
        "--reason",
        "DMC",
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert sum(1 for r in rows if r["study_id"]) == 1
    assert next(r for r in rows if r["study_id"] == subject)["arm"] == arm
    code, out, _ = run(
        capsys,
        "allocation",
        "export",
        "-p",
        NI,
        "--role",
        "statistician",
        "--unblinded",
        "--format",
        "json",
        "--stratum",
        "severity=severe",
    )
    assert code == 0 and {r["stratum"] for r in json.loads(out)} == {"severity=severe"}

    code, out, err = run(capsys, "allocation", "unblind", subject, "--reason", "allergy")
    assert code == 0, err
    assert out.startswith(f"{subject}: {arm}")
    code, out, err = run(capsys, "audit", "verify")
    assert code == 0, err


def test_close_arm_then_interim(db: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    study_ids = _enrol(db, ADAPTIVE, 3)
    code, out, err = run(
        capsys, "allocation", "close-arm", "a_supportive", "-p", ADAPTIVE, "--reason", "look 1"
    )
    assert code == 0, err
    assert out.strip() == "closed a_supportive; arms still open: b_prednisolone, c_methotrexate"
    for study_id in study_ids:
        code, out, err = run(capsys, "randomise", study_id, "--json")
        assert code == 0, err
        assert json.loads(out)["arm"] in ("b_prednisolone", "c_methotrexate")
    code, out, err = run(capsys, "allocation", "status", "-p", ADAPTIVE)
    assert "closed arms: a_supportive" in out
    code, out, err = run(capsys, "design", "interim", "--protocol", ADAPTIVE)
    assert code == 0, err
    assert "drop an arm when P(rate > 0.5) < 0.05" in out
    assert "a_supportive" in out and "already dropped" in out
    code, out, err = run(
        capsys, "design", "interim", "-p", ADAPTIVE, "--responders", "cr,pr", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["rules"]["responders"] == ["cr", "pr"]
    assert [(a["arm"], a["open"], a["evaluated"]) for a in data["arms"]] == [
        ("a_supportive", False, 0),
        ("b_prednisolone", True, 0),
        ("c_methotrexate", True, 0),
    ]
    code, _, err = run(capsys, "design", "interim", "-p", NI)
    assert code == 1 and "not an adaptive protocol" in err
