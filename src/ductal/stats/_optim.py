"""Shared numerics for the regression models: Newton–Raphson and the coefficient table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from ductal.stats._validate import FloatArray


def newton(
    objective: Callable[[FloatArray], tuple[float, FloatArray, FloatArray]],
    beta0: FloatArray,
    *,
    max_iter: int = 50,
) -> tuple[FloatArray, float, FloatArray, FloatArray, bool]:
    """Maximise a concave log likelihood by Newton–Raphson with step halving.

    ``objective(beta)`` returns (loglik, score, information). Iterates to the limit of floating
    point (Newton decrement below 1e-20, or no further improvement possible), so that estimates
    agree with R's to far better than 1e-6. Returns beta, loglik, score, information and
    whether it converged (decrement below 1e-8 at the end).
    """
    beta = beta0.copy()
    loglik, score, info = objective(beta)
    decrement = math.inf
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            return beta, loglik, score, info, False
        decrement = float(score @ step)
        if decrement < 1e-20:
            break
        noise = 1e-13 * max(1.0, abs(loglik))
        for _half in range(40):
            cand = objective(beta + step)
            if np.isfinite(cand[0]) and cand[0] >= loglik - noise:
                break
            step = step / 2
        else:
            break
        beta = beta + step
        loglik, score, info = cand
    else:
        decrement = float(score @ np.linalg.solve(info, score))
    return beta, loglik, score, info, bool(decrement < 1e-8)


def coefficient_table(
    names: Sequence[str],
    coef: FloatArray,
    se: FloatArray,
    conf_level: float,
    *,
    ratio: str = "hr",
) -> pd.DataFrame:
    """Return coef, se, exp(coef) (named ``ratio``) with its Wald interval, z and p-value."""
    z = float(st.norm.ppf(1 - (1 - conf_level) / 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        zstat = coef / se
        return pd.DataFrame(
            {
                "covariate": list(names),
                "coef": coef,
                "se": se,
                ratio: np.exp(coef),
                "lower": np.exp(coef - z * se),
                "upper": np.exp(coef + z * se),
                "z": zstat,
                "p_value": 2 * st.norm.sf(np.abs(zstat)),
            }
        )


def finite_estimate_problem(
    ok: bool, beta: FloatArray, info: FloatArray, x: FloatArray
) -> str | None:
    """Return why the fit has no usable finite estimate, or None if it has one.

    A likelihood that keeps rising as a coefficient grows (monotone likelihood: e.g. every
    event in the subjects with the highest covariate value) drives Newton's method towards
    infinity; R then warns and prints a huge coefficient. Here it is refused with a reason.
    """
    if not ok or not np.all(np.isfinite(beta)):
        return "the fit did not converge (the likelihood may have no finite maximum)"
    try:
        variance = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return "the covariates are constant or collinear; drop one"
    diag = np.diag(variance)
    if not np.all(np.isfinite(diag)) or np.any(diag <= 0):
        return "the information matrix is singular: a coefficient is not estimable"
    spread = x.std(axis=0)
    if np.any(np.abs(beta) * spread > 20):
        return "a coefficient is infinite (monotone likelihood: the events separate on it)"
    return None
