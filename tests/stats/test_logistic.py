"""Logistic regression against R's glm(family = binomial) and confint.default."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ductal.errors import ValidationError
from ductal.stats.logistic import LogisticRegression
from tests.stats.reference import arr, assert_close, dataset, names, reference


def test_matches_glm() -> None:
    ref = reference()["logistic"]
    lr = LogisticRegression().fit(dataset("tied"), outcome="cr", covariates=["age", "x1", "x2"])
    s = lr.summary
    assert list(s["covariate"]) == names(ref["names"])
    assert_close(s["coef"], ref["coef"], rtol=1e-7)
    assert_close(s["se"], ref["se"], rtol=1e-7)
    assert_close(s["p_value"], ref["p"], rtol=1e-6)
    assert_close(s["or"], np.exp(arr(ref["coef"])), rtol=1e-7)
    assert_close(s["lower"], np.exp(arr(ref["lower"])), rtol=1e-7)
    assert_close(s["upper"], np.exp(arr(ref["upper"])), rtol=1e-7)
    assert_close(lr.deviance_, ref["deviance"], rtol=1e-9)
    assert_close(lr.null_deviance_, ref["null_deviance"], rtol=1e-9)


def test_perfect_separation_is_a_clear_error() -> None:
    df = pd.DataFrame({"y": [0, 0, 0, 1, 1, 1], "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    with pytest.raises(ValidationError) as err:
        LogisticRegression().fit(df, outcome="y", covariates=["x"])
    assert "separated" in err.value.problems[0].message


def test_outcome_not_binary_names_row() -> None:
    df = pd.DataFrame({"y": [0, 1, 2], "x": [1.0, 2.0, 3.0]})
    with pytest.raises(ValidationError) as err:
        LogisticRegression().fit(df, outcome="y", covariates=["x"])
    p = err.value.problems[0]
    assert p.field == "column y" and p.message.startswith("row 3")
