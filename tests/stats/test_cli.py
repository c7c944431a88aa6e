"""``ductal stats``: JSON keys other tools rely on, readable tables, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ductal.cli import main
from tests.stats.reference import FIXTURES, assert_close, reference


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(["stats", *args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    code, out, err = run([*args, "--json"], capsys)
    assert code == 0, err
    assert "NaN" not in out and "Infinity" not in out
    return json.loads(out)


def test_proportion_json(capsys: pytest.CaptureFixture[str]) -> None:
    d = run_json(
        [
            "proportion",
            "--events",
            "30",
            "--n",
            "32",
            "--benchmark",
            "0.63",
            "--alternative",
            "greater",
        ],
        capsys,
    )
    ref = reference()["proportions"][0]
    assert d["method"] == "Clopper-Pearson exact"
    assert_close(
        [d["estimate"], d["lower"], d["upper"]], [30 / 32, ref["cp_lower"], ref["cp_upper"]]
    )
    assert_close(d["p_value"], ref["p_greater"])


def test_compare_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "compare",
        "--events1",
        "59",
        "--n1",
        "69",
        "--events2",
        "62",
        "--n2",
        "71",
        "--margin",
        "-0.15",
    ]
    d = run_json(args, capsys)
    ref = reference()["two_proportions"][0]
    assert_close(
        [d["estimate"], d["lower"], d["upper"], d["p_value"]],
        [ref["diff"], ref["wald_lower"], ref["wald_upper"], ref["ni_p_value"]],
    )
    assert d["non_inferior"] is True and d["method"] == "risk difference, Wald interval"
    code, out, _ = run(args, capsys)
    assert code == 0 and "non-inferior" in out and "-13.2" in out


def test_km_json(capsys: pytest.CaptureFixture[str]) -> None:
    d = run_json(
        [
            "km",
            str(FIXTURES / "aml.csv"),
            "--time",
            "time",
            "--event",
            "status",
            "--group",
            "x",
            "--conf-type",
            "log-log",
        ],
        capsys,
    )
    ref = next(
        r for r in reference()["km"] if r["label"] == "aml_by_x" and r["conf_type"] == "log-log"
    )
    assert [g["name"] for g in d["groups"]] == ["Maintained", "Nonmaintained"]
    for g, rg in zip(d["groups"], ref["groups"], strict=True):
        assert_close(g["survival"], rg["surv"], atol=1e-12)
        assert_close(g["lower"], rg["lower"], atol=1e-12)  # None where R has NA
        assert_close(
            [g["median"], g["median_lower"], g["median_upper"]],
            [rg["quantile"][1], rg["quantile_lower"][1], rg["quantile_upper"][1]],
        )
        assert {"time", "n_risk", "n_event", "n_censor", "std_err", "upper"} <= g.keys()
    lr = next(r for r in reference()["logrank"] if r["label"] == "aml_by_x")
    assert_close(d["logrank"]["p_value"], lr["p"])


def test_cuminc_json(capsys: pytest.CaptureFixture[str]) -> None:
    d = run_json(
        [
            "cuminc",
            str(FIXTURES / "mgus2.csv"),
            "--time",
            "etime",
            "--status",
            "event",
            "--group",
            "sex",
            "--cause",
            "1",
        ],
        capsys,
    )
    assert {(c["cause"], c["group"]) for c in d["curves"]} == {(1, "F"), (1, "M")}
    assert {"time", "estimate", "variance"} <= d["curves"][0].keys()
    ref = reference()["cuminc"][0]["tests"]
    assert_close(d["tests"][0]["p_value"], ref["pv"][0])


def test_cox_and_finegray_json(capsys: pytest.CaptureFixture[str]) -> None:
    d = run_json(
        [
            "cox",
            str(FIXTURES / "ovarian.csv"),
            "--time",
            "futime",
            "--event",
            "fustat",
            "--covariates",
            "age,ecog.ps,rx",
        ],
        capsys,
    )
    ref = reference()["cox"][0]
    assert_close([c["coef"] for c in d["covariates"]], ref["coef"], rtol=1e-8)
    assert {"coef", "se", "hr", "lower", "upper", "p_value"} <= d["covariates"][0].keys()
    f = run_json(
        [
            "finegray",
            str(FIXTURES / "mgus2.csv"),
            "--time",
            "etime",
            "--status",
            "event",
            "--cause",
            "1",
            "--covariates",
            "age,male",
        ],
        capsys,
    )
    assert_close([c["se"] for c in f["covariates"]], reference()["finegray"][0]["se"])


def test_logistic_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["logistic", str(FIXTURES / "tied.csv"), "--outcome", "cr", "--covariates", "age,x1"],
        capsys,
    )
    assert code == 0 and "(Intercept)" in out and "or" in out.split("\n")[1]


BAD_ROWS = "t,e,s,x\n1,1,1,0.5\n2,0,0,0.1\n-3,1,2,0.2\n4,1,1,0.3\n"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ["km", "{f}", "--time", "nope", "--event", "e"],
            ["column nope", "no such column"],
            id="missing-column",
        ),
        pytest.param(
            ["km", "{f}", "--time", "t", "--event", "e"],
            ["column t", "row 3", "negative"],
            id="negative-time",
        ),
        pytest.param(
            ["cox", "{f}", "--time", "t", "--event", "e", "--covariates", "x"],
            ["column t", "row 3"],
            id="cox-negative-time",
        ),
        pytest.param(
            ["cuminc", "{g}", "--time", "t", "--status", "s", "--cause", "3"],
            ["column s", "status code 3"],
            id="absent-cause",
        ),
        pytest.param(
            ["km", "{g}", "--time", "t", "--event", "e"],
            ["column e", "row 5", "0 (censored) or 1"],
            id="event-not-0-1",
        ),
        pytest.param(
            ["km", "{h}", "--time", "t", "--event", "e"],
            ["column t", "row 4", "'abc' is not a number"],
            id="non-numeric",
        ),
        pytest.param(
            ["km", "missing.csv", "--time", "t", "--event", "e"], ["no such file"], id="no-file"
        ),
    ],
)
def test_bad_input_is_one_line_naming_column_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragments: list[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD_ROWS)
    good_times = tmp_path / "codes.csv"
    good_times.write_text("t,e,s\n1,1,1\n2,0,0\n3,1,2\n4,1,1\n5,2,0\n")
    text_time = tmp_path / "text.csv"
    text_time.write_text("t,e\n1,1\n2,0\n3,1\nabc,1\n")
    args = [a.format(f=bad, g=good_times, h=text_time) for a in args]
    code, out, err = run(args, capsys)
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_km_estimates_at_times(capsys: pytest.CaptureFixture[str]) -> None:
    ref = reference()["km_at"]
    d = run_json(
        [
            "km",
            str(FIXTURES / "ovarian.csv"),
            "--time",
            "futime",
            "--event",
            "fustat",
            "--at",
            ",".join(str(t) for t in ref["times"]),
        ],
        capsys,
    )
    assert_close([row["survival"] for row in d["at"]], ref["surv"], atol=1e-12)
    assert_close(
        [row["cumulative_incidence"] for row in d["at"]], [1 - s for s in ref["surv"]], atol=1e-12
    )
