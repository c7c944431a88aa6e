"""Logistic regression for a binary outcome (e.g. complete response): odds ratios with CIs.

Maximum likelihood by Newton–Raphson to the limit of floating point, as R's
``glm(family = binomial)``; Wald (``confint.default``) intervals and z-test p-values.
Perfect separation, where no finite estimate exists, is reported as an error rather than
returning the huge coefficients R warns about.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy.special import expit, log_expit

from ductal.stats import _validate as v
from ductal.stats._json import jsonable
from ductal.stats._optim import coefficient_table, newton
from ductal.stats._validate import FloatArray

_WHAT = "logistic regression"


def _loglik(x: FloatArray, y: FloatArray, beta: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    eta = x @ beta
    p = expit(eta)
    loglik = float(np.sum(y * log_expit(eta) + (1 - y) * log_expit(-eta)))
    score = x.T @ (y - p)
    info = (x * (p * (1 - p))[:, None]).T @ x
    return loglik, score, info


class LogisticRegression:
    """Logistic regression with an intercept, lifelines-style.

    >>> lr = LogisticRegression().fit(df, outcome="cr", covariates=["age", "lavage"])
    >>> lr.summary   # covariate, coef, se, or, lower, upper, z, p_value
    """

    method = "logistic regression, maximum likelihood, Wald intervals"

    def __init__(self, *, conf_level: float = 0.95) -> None:
        self.conf_level = v.probability(conf_level, "conf_level", what=_WHAT)
        self.coef_: FloatArray = np.empty(0)
        self.se_: FloatArray = np.empty(0)
        self.variance_: FloatArray = np.empty((0, 0))
        self.deviance_: float = math.nan
        self.null_deviance_: float = math.nan
        self.names_: list[str] = []
        self.n_: int = 0

    def fit(self, data: pd.DataFrame, *, outcome: str, covariates: Sequence[str]) -> Self:
        """Fit ``outcome`` (0/1) on ``covariates`` plus an intercept."""
        y = v.events(v.column(data, outcome, what=_WHAT), f"column {outcome}", what=_WHAT)
        x = v.covariates(data, covariates, what=_WHAT)
        v.not_empty(y.size, what=_WHAT)
        if y.min() == y.max():
            raise v.fail(
                f"column {outcome}", f"every row has outcome {y[0]}: nothing to model", what=_WHAT
            )
        design = np.column_stack((np.ones(y.size), x))
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise v.fail(
                "covariates", "the covariates are constant or collinear; drop one", what=_WHAT
            )
        yf = y.astype(np.float64)
        beta, loglik, _score, info, ok = newton(
            lambda b: _loglik(design, yf, b), np.zeros(design.shape[1]), max_iter=100
        )
        fitted = expit(design @ beta)
        if not ok or min(fitted.min(), 1 - fitted.max()) < 1e-10:
            raise v.fail(
                "covariates",
                "the outcome is perfectly separated by the covariates; no finite odds ratio",
                what=_WHAT,
            )
        self.coef_ = beta
        self.variance_ = np.linalg.inv(info)
        self.se_ = np.sqrt(np.diag(self.variance_))
        self.deviance_ = -2 * loglik
        mean = yf.mean()
        self.null_deviance_ = -2 * float(np.sum(yf * np.log(mean) + (1 - yf) * np.log(1 - mean)))
        self.names_ = ["(Intercept)", *covariates]
        self.n_ = int(y.size)
        return self

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient, SE, odds ratio with Wald CI, z and p-value per term."""
        if not self.names_:
            raise v.fail("model", "call fit() first", what=_WHAT)
        return coefficient_table(self.names_, self.coef_, self.se_, self.conf_level, ratio="or")

    def to_dict(self) -> dict[str, Any]:
        """The fit as JSON-ready values."""
        return jsonable(
            {
                "method": self.method,
                "n": self.n_,
                "deviance": self.deviance_,
                "null_deviance": self.null_deviance_,
                "conf_level": self.conf_level,
                "covariates": self.summary,
            }
        )
