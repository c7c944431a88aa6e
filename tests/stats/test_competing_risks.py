"""Cumulative incidence, Gray's test and Fine–Gray against R's cmprsk."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from ductal.errors import ValidationError
from ductal.stats.competing_risks import FineGray, cumulative_incidence
from tests.stats.reference import arr, assert_close, dataset, names, reference


def _cuminc(label: str) -> Any:
    if label == "mgus2_by_sex":
        df = dataset("mgus2")
        return cumulative_incidence(df["etime"], df["event"], df["sex"])
    df = dataset("tied")
    if label == "tied_by_group":
        return cumulative_incidence(df["time"], df["status"], df["group"])
    if label == "tied_by_group_strata":
        return cumulative_incidence(df["time"], df["status"], df["group"], strata=df["stratum"])
    return cumulative_incidence(df["time"], df["status"])


@pytest.mark.parametrize("ref", reference()["cuminc"], ids=lambda r: r["label"])
def test_cuminc_estimates_and_variances(ref: dict[str, Any]) -> None:
    result = _cuminc(ref["label"])
    assert len(result.curves) == len(ref["curves"])
    for rc in ref["curves"]:
        group, cause = rc["name"].rsplit(" ", 1)
        at = result.curve(int(cause), "all" if group == "all" else group).at(rc["time"])
        assert_close(at["estimate"], rc["est"], rtol=1e-9, atol=1e-14)
        assert_close(at["variance"], rc["var"], rtol=1e-9, atol=1e-16)


@pytest.mark.parametrize(
    "ref", [r for r in reference()["cuminc"] if r["tests"]], ids=lambda r: r["label"]
)
def test_gray_test(ref: dict[str, Any]) -> None:
    result = _cuminc(ref["label"])
    tests = ref["tests"]
    assert [str(t.cause) for t in result.tests] == names(tests["cause"])
    assert_close([t.statistic for t in result.tests], tests["stat"], rtol=1e-9)
    assert_close([t.p_value for t in result.tests], tests["pv"], rtol=1e-7)
    assert [t.df for t in result.tests] == list(arr(tests["df"]))


def _finegray(ref: dict[str, Any]) -> FineGray:
    if ref["label"].startswith("mgus2"):
        df, time, status = dataset("mgus2"), "etime", "event"
    else:
        df, time, status = dataset("tied"), "time", "status"
    fg = FineGray(cause=int(ref["failcode"]))
    return fg.fit(df, time=time, status=status, covariates=names(ref["names"]))


@pytest.mark.parametrize("ref", reference()["finegray"], ids=lambda r: r["label"])
def test_finegray_matches_crr(ref: dict[str, Any]) -> None:
    fg = _finegray(ref)
    assert fg.converged_
    assert_close(fg.coef_, ref["coef"], rtol=1e-6)
    assert_close(fg.se_, ref["se"], rtol=1e-6)
    assert_close(fg.loglik_, ref["loglik"], rtol=1e-10)
    s = fg.summary
    assert {"coef", "se", "hr", "lower", "upper", "p_value"} <= set(s.columns)


def test_cuminc_with_no_events_of_a_cause_in_a_group() -> None:
    r = cumulative_incidence([1, 2, 3, 4], [1, 0, 0, 2], ["a", "a", "b", "b"])
    b1 = r.curve(1, "b")
    assert b1.time.size == 0
    assert r.curve(1, "b").at([2.0, 3.5])["estimate"].tolist() == [0.0, 0.0]
    assert np.isnan(r.curve(1, "b").at([10.0])["estimate"][0])  # beyond follow-up


def test_cuminc_sums_with_km_to_one() -> None:
    df = dataset("tied")
    r = cumulative_incidence(df["time"], df["status"])
    from ductal.stats.survival import kaplan_meier

    km = kaplan_meier(df["time"], (df["status"] > 0).astype(int))
    times = np.unique(df["time"])
    total = r.curve(1).at(times)["estimate"] + r.curve(2).at(times)["estimate"]
    np.testing.assert_allclose(total, 1 - km.at(times)["survival"], atol=1e-12)


@pytest.mark.parametrize(
    ("status", "cause", "fragment"),
    [
        pytest.param([0, 1, 2, 1.5], None, "row 4: status must be a whole number", id="frac"),
        pytest.param([0, 1, 2, 1], [3], "status code 3 does not occur", id="absent-cause"),
    ],
)
def test_bad_status(status: list[float], cause: list[int] | None, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        cumulative_incidence([1, 2, 3, 4], status, causes=cause)
    assert fragment in err.value.problems[0].message


def test_finegray_missing_cause_names_column() -> None:
    df = pd.DataFrame({"t": [1.0, 2.0, 3.0], "s": [0, 2, 2], "x": [1.0, 2.0, 0.0]})
    with pytest.raises(ValidationError) as err:
        FineGray(cause=1).fit(df, time="t", status="s", covariates=["x"])
    assert err.value.problems[0].field == "column s"
