"""The ``ductal design`` commands: JSON keys, and one clear line (no traceback) on bad input."""

from __future__ import annotations

import json

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
