"""Kaplan–Meier, quantiles, restricted mean and log-rank against R's survival package."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from ductal.errors import ValidationError
from ductal.stats.survival import KaplanMeier, kaplan_meier, logrank_test
from tests.stats.reference import assert_close, dataset, reference

# label -> (dataset, time column, event column, group column)
SPECS: dict[str, tuple[str, str, str, str | None]] = {
    "aml": ("aml", "time", "status", None),
    "aml_by_x": ("aml", "time", "status", "x"),
    "ovarian": ("ovarian", "futime", "fustat", None),
    "ovarian_by_rx": ("ovarian", "futime", "fustat", "rx"),
    "tied": ("tied", "time", "event", None),
    "tied_by_group": ("tied", "time", "event", "group"),
    "mgus2_by_sex": ("mgus2", "futime", "death", "sex"),
}


def _fit(label: str, conf_type: Any) -> KaplanMeier:
    name, time, event, group = SPECS[label]
    df = dataset(name)
    return KaplanMeier(conf_type=conf_type).fit(
        df[time], df[event], None if group is None else df[group]
    )


def _r_group_name(r_name: str) -> str:
    return r_name.split("=", 1)[1] if "=" in r_name else r_name


@pytest.mark.parametrize("ref", reference()["km"], ids=lambda r: f"{r['label']}-{r['conf_type']}")
def test_curves_match_survfit(ref: dict[str, Any]) -> None:
    km = _fit(ref["label"], ref["conf_type"])
    assert len(km.curves_) == len(ref["groups"])
    for rg in ref["groups"]:
        c = km.curves_[_r_group_name(rg["name"])]
        assert_close(c.time, rg["time"], rtol=0)
        assert_close(c.n_risk, rg["n_risk"], rtol=0)
        assert_close(c.n_event, rg["n_event"], rtol=0)
        assert_close(c.n_censor, rg["n_censor"], rtol=0)
        assert_close(c.survival, rg["surv"], atol=1e-12)
        # R reports Inf once S reaches 0; JSON stores it as null.
        se = np.where(np.isinf(c.std_err_log), np.nan, c.std_err_log)
        assert_close(se, rg["std_err_log"])
        assert_close(c.lower, rg["lower"], atol=1e-12)
        assert_close(c.upper, rg["upper"], atol=1e-12)
        for p, est, lo, hi in zip(
            (0.25, 0.5, 0.75),
            rg["quantile"],
            rg["quantile_lower"],
            rg["quantile_upper"],
            strict=True,
        ):
            q = c.quantile(p)
            assert_close([q.estimate, q.lower, q.upper], [est, lo, hi], rtol=1e-12)
        rmst, rmst_se = c.rmst()
        assert_close([rmst, rmst_se], [rg["rmean"], rg["rmean_se"]], rtol=1e-9)


@pytest.mark.parametrize("ref", reference()["km_rmean"], ids=lambda r: f"tau{r['tau']}")
def test_restricted_mean_at_horizon(ref: dict[str, Any]) -> None:
    df = dataset("aml")
    c = kaplan_meier(df["time"], df["status"])
    assert_close(c.rmst(ref["tau"]), [ref["rmean"], ref["se"]], rtol=1e-9)


def test_estimates_at_times_match_summary_extend() -> None:
    ref = reference()["km_at"]
    df = dataset("ovarian")
    at = kaplan_meier(df["futime"], df["fustat"]).at(ref["times"])
    for col, key in [
        ("survival", "surv"),
        ("std_err", "std_err"),
        ("lower", "lower"),
        ("upper", "upper"),
        ("n_risk", "n_risk"),
    ]:
        assert_close(at[col], ref[key], atol=1e-12)
    np.testing.assert_allclose(at["cumulative_incidence"], 1 - at["survival"])


@pytest.mark.parametrize("ref", reference()["logrank"], ids=lambda r: r["label"])
def test_logrank_matches_survdiff(ref: dict[str, Any]) -> None:
    label = ref["label"]
    strata = None
    if label == "tied_by_group_strata":
        label, strata = "tied_by_group", "stratum"
    name, time, event, group = SPECS[label]
    df = dataset(name)
    r = logrank_test(df[time], df[event], df[group], strata=None if strata is None else df[strata])
    assert_close(r.statistic, ref["chisq"], rtol=1e-9)
    assert r.df == ref["df"]
    assert_close(r.p_value, ref["p"], rtol=1e-7)
    assert_close(r.observed, ref["observed"], rtol=0)
    assert_close(r.expected, ref["expected"], rtol=1e-9)


def test_grouped_fit_runs_logrank_and_summary() -> None:
    df = dataset("aml")
    km = KaplanMeier().fit(df["time"], df["status"], df["x"])
    assert km.logrank_ is not None
    ref = next(r for r in reference()["logrank"] if r["label"] == "aml_by_x")
    assert_close(km.logrank_.statistic, ref["chisq"], rtol=1e-9)
    s = km.summary
    assert list(s["group"]) == ["Maintained", "Nonmaintained"]
    out = km.to_dict()
    assert out["logrank"]["p_value"] == pytest.approx(ref["p"], rel=1e-7)
    assert {
        "name",
        "time",
        "n_risk",
        "n_event",
        "n_censor",
        "survival",
        "std_err",
        "lower",
        "upper",
        "median",
        "median_lower",
        "median_upper",
    } <= out["groups"][0].keys()


# ---------------------------------------------------------------- edge cases


def test_all_censored_gives_flat_curve_and_no_median() -> None:
    c = kaplan_meier([1, 2, 3], [0, 0, 0])
    np.testing.assert_array_equal(c.survival, [1, 1, 1])
    assert np.isnan(c.median.estimate) and np.isnan(c.median.upper)
    assert c.to_dict()["median"] is None


def test_single_subject_with_event() -> None:
    # R: S = 0 at t = 3, std.err Inf, bounds NA; quantiles 3 with NA bounds.
    c = kaplan_meier([3], [1])
    assert c.survival.tolist() == [0.0]
    assert np.isinf(c.std_err_log[0]) and np.isnan(c.lower[0])
    assert c.median.estimate == 3 and np.isnan(c.median.lower)


def test_zero_times_and_ties_everywhere() -> None:
    # R (survfit on t = 0,0,1,2 with events 1,0,1,0): S = 0.75, 0.375, 0.375.
    c = kaplan_meier([0, 0, 1, 2], [1, 0, 1, 0])
    np.testing.assert_allclose(c.survival, [0.75, 0.375, 0.375])
    np.testing.assert_allclose(c.std_err_log, [0.2886751, 0.7637626, 0.7637626], rtol=1e-6)


def test_no_events_logrank_is_zero_not_a_crash() -> None:
    r = logrank_test([1, 2, 3, 4], [0, 0, 0, 0], ["a", "a", "b", "b"])
    assert r.statistic == 0 and r.df == 0 and np.isnan(r.p_value)


@pytest.mark.parametrize(
    ("time", "event", "field", "fragment"),
    [
        pytest.param([1, -2, 3], [1, 0, 1], "time", "row 2: negative time", id="negative"),
        pytest.param([1, np.nan, 3], [1, 0, 1], "time", "row 2: value is missing", id="nan"),
        pytest.param(["1", "x", "3"], [1, 0, 1], "time", "row 2: 'x' is not a number", id="text"),
        pytest.param([1, 2, 3], [1, 2, 1], "event", "row 2: event must be 0", id="not-0-1"),
        pytest.param([], [], "input", "no rows", id="empty"),
    ],
)
def test_bad_input_names_field_and_row(time: Any, event: Any, field: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        kaplan_meier(pd.Series(time, dtype=object), event)
    problem = err.value.problems[0]
    assert problem.field == field
    assert fragment in problem.message


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        # R: quantile(survfit(Surv(1:4, rep(1, 4)) ~ 1), 0.5) -> 2.5, lower 1, upper NA
        pytest.param([1, 1, 1, 1], (2.5, 1.0, np.nan), id="flat-stretch-midpoint"),
        # R: quantile(survfit(Surv(1:4, c(1, 1, 0, 0)) ~ 1), 0.5) -> 3, lower 1, upper NA
        # (print.survfit's table says 2 here; ductal follows quantile.survfit)
        pytest.param([1, 1, 0, 0], (3.0, 1.0, np.nan), id="flat-to-the-end"),
    ],
)
def test_median_rule_on_flat_stretch_at_one_half(
    event: list[int], expected: tuple[float, float, float]
) -> None:
    m = kaplan_meier([1, 2, 3, 4], event).median
    np.testing.assert_allclose([m.estimate, m.lower, m.upper], expected)
