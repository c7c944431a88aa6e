"""Cox regression (Efron), concordance and cox.zph against R's survival package."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from ductal.errors import ValidationError
from ductal.stats.cox import CoxPH, concordance
from tests.stats.reference import arr, assert_close, dataset, names, reference

SPECS = {
    "ovarian": ("ovarian", "futime", "fustat"),
    "mgus2": ("mgus2", "futime", "death"),
    "tied": ("tied", "time", "event"),
    "aml_small": ("aml", "time", "status"),
}


def _data(label: str) -> pd.DataFrame:
    name = SPECS[label][0]
    df = dataset(name).copy()
    if label == "aml_small":  # as in make_fixtures.R: seq_along(time) %% 5
        df["age"] = np.arange(1, len(df) + 1) % 5
    return df


@pytest.fixture(scope="module", params=reference()["cox"], ids=lambda r: r["label"])
def fitted(request: pytest.FixtureRequest) -> tuple[CoxPH, dict[str, Any]]:
    ref = request.param
    _, time, event = SPECS[ref["label"]]
    cox = CoxPH().fit(_data(ref["label"]), time=time, event=event, covariates=names(ref["names"]))
    return cox, ref


def test_coefficients_and_standard_errors(fitted: tuple[CoxPH, dict[str, Any]]) -> None:
    cox, ref = fitted
    assert_close(cox.coef_, ref["coef"], rtol=1e-8)
    assert_close(cox.se_, ref["se"], rtol=1e-8)
    s = cox.summary
    assert_close(s["hr"], np.exp(arr(ref["coef"])), rtol=1e-8)
    assert list(s["covariate"]) == names(ref["names"])


def test_likelihood_and_lrt(fitted: tuple[CoxPH, dict[str, Any]]) -> None:
    cox, ref = fitted
    assert_close(cox.loglik_, ref["loglik"], rtol=1e-10)
    stat, df, _p = cox.likelihood_ratio_test
    assert_close(stat, ref["lrt"], rtol=1e-7)
    assert df == len(names(ref["names"]))


def test_concordance(fitted: tuple[CoxPH, dict[str, Any]]) -> None:
    cox, ref = fitted
    assert_close(cox.concordance_, ref["concordance"], rtol=1e-10)


def test_proportional_hazards_check_matches_cox_zph(fitted: tuple[CoxPH, dict[str, Any]]) -> None:
    cox, ref = fitted
    z = cox.check_assumptions()
    assert list(z["covariate"]) == names(ref["zph_names"])
    assert_close(z["chisq"], ref["zph_chisq"], rtol=1e-6)
    assert_close(z["df"], ref["zph_df"], rtol=0)
    assert_close(z["p_value"], ref["zph_p"], rtol=1e-6)


def test_concordance_by_brute_force() -> None:
    rng = np.random.default_rng(7)
    t = rng.integers(0, 6, 60).astype(float)
    e = rng.integers(0, 2, 60)
    r = rng.integers(0, 4, 60).astype(float)
    conc = disc = tied = 0.0
    for i in range(60):
        for j in range(60):
            if e[i] == 1 and (t[j] > t[i] or (t[j] == t[i] and e[j] == 0)):
                conc += r[i] > r[j]
                disc += r[i] < r[j]
                tied += r[i] == r[j]
    assert concordance(t, e, r) == pytest.approx((conc + tied / 2) / (conc + disc + tied))


def test_no_events_is_a_clear_error() -> None:
    df = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [0, 0, 0], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValidationError) as err:
        CoxPH().fit(df, time="t", event="e", covariates=["x"])
    assert err.value.problems[0].field == "column e"


def test_constant_covariate_is_a_clear_error() -> None:
    df = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [1, 0, 1], "x": [1.0, 1.0, 1.0]})
    with pytest.raises(ValidationError) as err:
        CoxPH().fit(df, time="t", event="e", covariates=["x"])
    assert "same value" in err.value.problems[0].message


def test_missing_covariate_value_names_row() -> None:
    df = pd.DataFrame({"t": [1.0, 2.0, 3.0], "e": [1, 0, 1], "x": [1.0, None, 3.0]})
    with pytest.raises(ValidationError) as err:
        CoxPH().fit(df, time="t", event="e", covariates=["x"])
    p = err.value.problems[0]
    assert p.field == "column x" and p.message.startswith("row 2")
