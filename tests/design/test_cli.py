"""The ``ductal design`` commands: JSON keys, and one clear line (no traceback) on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ductal.cli import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = 0
    try:
        main(["design", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_single_arm_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "single-arm", "--p0", "0.7", "--p1", "0.9", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["n"], data["r"]) == (28, 23)
    assert {"alpha", "power"} <= data.keys()


def test_simon_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "simon", "--p0", "0.7", "--p1", "0.9", "--alpha", "0.05", "--beta", "0.2", "--json"
    )
    data = json.loads(out)
    assert code == 0
    assert (data["optimal"]["r1"], data["optimal"]["n1"]) == (4, 6)
    assert (data["minimax"]["r"], data["minimax"]["n"]) == (21, 26)
    assert {"en0", "pet0", "alpha", "power"} <= data["minimax"].keys()


def test_two_arm_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "two-arm",
        "--p1",
        "0.9",
        "--p2",
        "0.9",
        "--margin",
        "0.15",
        "--alpha",
        "0.025",
        "--power",
        "0.8",
        "--dropout",
        "0.1",
        "--json",
    )
    data = json.loads(out)
    assert code == 0
    assert (data["n_per_arm"], data["n_total"]) == (70, 140)


def test_boundaries_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "boundaries", "--looks", "3", "--type", "pocock")
    assert code == 0
    assert "2.2895" in out  # rpact: Pocock, 3 looks, one-sided alpha 0.025


@pytest.mark.parametrize(
    ("args", "field"),
    [
        pytest.param(["single-arm", "--p0", "1.5", "--p1", "0.9"], "p0", id="p0-outside"),
        pytest.param(["simon", "--p0", "0.9", "--p1", "0.7"], "p1", id="p1-below-p0"),
        pytest.param(["simon", "--p0", "0.1", "--p1", "0.3", "--nmax", "12"], "nmax", id="nmax"),
        pytest.param(["two-arm", "--p1", "0.9", "--p2", "0.9", "--alpha", "1"], "alpha", id="a"),
        pytest.param(["boundaries", "--looks", "3", "--type", "haybittle"], "type", id="type"),
    ],
)
def test_bad_input_is_one_clear_error(
    capsys: pytest.CaptureFixture[str], args: list[str], field: str
) -> None:
    code, _, err = _run(capsys, *args)
    assert code == 1
    assert err.startswith("error: ")
    assert f"- {field}:" in err
    assert "Traceback" not in err


def test_simulate_builtin_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "simulate", "builtin:lavage-pilot", "--trials", "2000", "--seed", "1", "--json"
    )
    data = json.loads(out)
    assert code == 0
    assert data["seed"] == 1 and data["trials"] == 2000
    assert [s["scenario"] for s in data["scenarios"]] == ["null", "target", "published"]
    assert data["scenarios"][0]["type_i_error"] is not None


def test_simulate_text_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "builtin:refractory-igm-adaptive" in out
    code, out, _ = _run(
        capsys,
        "simulate",
        "builtin:lavage-vs-steroid-ni",
        "--trials",
        "500",
        "--scenario",
        "planned",
    )
    assert code == 0
    assert "[planned] power" in out


def test_simulate_bad_design_names_the_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\narms: [{id: A}, {id: B}]\nlooks: [40, 20]\n"
        "scenarios:\n  - {name: s1, rates: {A: 0.5, B: 0.5}}\n  - {name: s2, rates: {A: 0.5}}\n"
    )
    code, _, err = _run(capsys, "simulate", str(path), "--trials", "10")
    assert code == 1
    assert "- looks[1]:" in err
    assert "- scenarios[1].rates.B:" in err
    assert "Traceback" not in err


def test_simulate_workers_and_scheduler_conflict(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys, "simulate", "builtin:lavage-pilot", "--workers", "2", "--scheduler", "tcp://x:1"
    )
    assert code == 1 and "- workers:" in err
