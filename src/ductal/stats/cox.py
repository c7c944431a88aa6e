"""Cox proportional hazards with Efron ties, concordance, and the ``cox.zph`` check.

Follows R's ``survival::coxph(ties = "efron")``:

* Newton–Raphson to the limit of floating point from β = 0 (covariates centred first, which
  changes nothing but the numerics); variance the inverse information.
* Wald intervals and p-values per covariate, likelihood-ratio test against the null model.
* Harrell's concordance as ``survival::concordance``: a pair is comparable when the shorter time
  is an event (a censoring tied with an event counts as the longer time); ties in the linear
  predictor count one half.
* Proportional hazards check as ``cox.zph(fit, transform = "km")`` (survival ≥ 3.0): the score
  test for adding x·g(t) to the model, g(t) = 1 − KM(t−) centred at its mean over events, per
  covariate and globally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd
from scipy import stats as st

from ductal.stats import _validate as v
from ductal.stats._json import jsonable
from ductal.stats._optim import coefficient_table, finite_estimate_problem, newton
from ductal.stats._validate import FloatArray, IntArray

_WHAT = "Cox regression"


@dataclass(frozen=True)
class _Data:
    """Subjects sorted by time, with per-time aggregates for the Efron likelihood."""

    time: FloatArray
    event: IntArray
    x: FloatArray
    inv: IntArray  # index of each subject's distinct time
    n_times: int
    deaths: FloatArray  # deaths per distinct time
    death_time: IntArray  # for each death (expanded): its distinct time
    death_frac: FloatArray  # k/d for the k-th of d tied deaths


def _prepare(time: FloatArray, event: IntArray, x: FloatArray) -> _Data:
    times, inv = np.unique(time, return_inverse=True)
    deaths = np.bincount(inv, weights=event, minlength=times.size)
    d = deaths.astype(np.int64)
    death_time = np.repeat(np.arange(times.size), d)
    first = np.cumsum(d) - d
    k = np.arange(death_time.size) - np.repeat(first, d)
    frac = k / np.repeat(np.maximum(d, 1), d)
    return _Data(time, event, x, inv, times.size, deaths, death_time, frac)


def _moments(
    data: _Data, beta: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Linear predictor, and per (expanded) death the Efron-adjusted risk-set moments.

    Returns eta, S0, the weighted mean of x and the weighted mean of x xᵀ (deaths × p × p):
    for the k-th of d deaths tied at a time, k/d of the dying subjects' weight is removed.
    """
    x, inv, m = data.x, data.inv, data.n_times
    p = x.shape[1]
    eta = x @ beta
    r = np.exp(eta)
    ev = data.event.astype(bool)
    cols = [r, *(r * x[:, j] for j in range(p))]
    cols += [r * x[:, j] * x[:, k] for j in range(p) for k in range(p)]
    at_time = np.stack([np.bincount(inv, weights=c, minlength=m) for c in cols], axis=1)
    dying = np.stack(
        [np.bincount(inv, weights=np.where(ev, c, 0.0), minlength=m) for c in cols], axis=1
    )
    risk = np.cumsum(at_time[::-1], axis=0)[::-1]
    t, f = data.death_time, data.death_frac
    s = risk[t] - f[:, None] * dying[t]
    s0 = s[:, 0]
    mean = s[:, 1 : p + 1] / s0[:, None]
    second = s[:, p + 1 :].reshape(-1, p, p) / s0[:, None, None]
    return eta, s0, mean, second


def _efron(data: _Data, beta: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """Efron log partial likelihood, score and information at ``beta``."""
    eta, s0, mean, second = _moments(data, beta)
    ev = data.event.astype(bool)
    loglik = float(eta[ev].sum() - np.log(s0).sum())
    score = data.x[ev].sum(axis=0) - mean.sum(axis=0)
    info = second.sum(axis=0) - mean.T @ mean
    return loglik, score, info


def _zph(data: _Data, beta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Score vector and information of the cox.zph test (transform "km") at ``beta``.

    The model gains x·g(t); g is the same for everyone at a death time, so the extra score is
    Σ g(t)(x_dead − mean) and the information blocks are Σ [1, g; g, g²] ⊗ cov (Efron).
    """
    x, inv, m = data.x, data.inv, data.n_times
    p = x.shape[1]
    ev = data.event.astype(bool)
    # g(t) = 1 - KM(t-), centred at its mean over events.
    total = np.bincount(inv, minlength=m).astype(np.float64)
    at_risk = np.cumsum(total[::-1])[::-1]
    before = np.concatenate(([1.0], np.cumprod(1 - data.deaths / at_risk)[:-1]))
    g_time = (1 - before) - (1 - before)[inv[ev]].mean()
    _eta, _s0, mean, second = _moments(data, beta)
    cov = second - mean[:, :, None] * mean[:, None, :]
    t = data.death_time
    g = g_time[t]
    x_dead = np.stack(
        [np.bincount(inv, weights=np.where(ev, x[:, j], 0.0), minlength=m) for j in range(p)], 1
    )
    u_t = x_dead[t] / data.deaths[t][:, None] - mean
    u = np.concatenate((np.zeros(p), (g[:, None] * u_t).sum(axis=0)))
    i11 = cov.sum(axis=0)
    i12 = (g[:, None, None] * cov).sum(axis=0)
    i22 = (g[:, None, None] ** 2 * cov).sum(axis=0)
    return u, np.block([[i11, i12], [i12, i22]])


def _prefix_counts(
    values: IntArray, prefix: IntArray, query: IntArray
) -> tuple[IntArray, IntArray]:
    """For each query q, count values[:prefix[q]] below and equal to query[q] (ranks ≥ 0).

    Decomposes each prefix into aligned power-of-two blocks and counts inside each block by
    binary search on block-sorted keys: O(n log² n), all in NumPy.
    """
    n = values.size
    span = int(values.max(initial=0)) + 2
    less = np.zeros(query.size, dtype=np.int64)
    equal = np.zeros(query.size, dtype=np.int64)
    level = 0
    while (1 << level) <= n:
        size = 1 << level
        block = np.arange(n) // size
        keys = np.sort(block * span + values)
        has = (prefix >> level) & 1 == 1
        start_block = (prefix[has] >> (level + 1)) << 1
        base = start_block * span
        lo = np.searchsorted(keys, base + query[has], side="left")
        hi = np.searchsorted(keys, base + query[has], side="right")
        first = np.searchsorted(keys, base, side="left")
        less[has] += lo - first
        equal[has] += hi - lo
        level += 1
    return less, equal


def concordance(time: FloatArray, event: IntArray, risk: FloatArray) -> float:
    """Harrell's C: the share of comparable pairs where the higher ``risk`` failed first."""
    order = np.lexsort((event, -time))  # by time descending; censored before events at ties
    t, e, r = time[order], event[order], risk[order]
    rank = np.unique(r, return_inverse=True)[1]
    block_start = _event_block_start(t, e)
    ev = np.flatnonzero(e == 1)
    less, equal = _prefix_counts(rank, block_start[ev], rank[ev])
    comparable = block_start[ev]
    concordant = float(less.sum())
    tied = float(equal.sum())
    discordant = float((comparable - less - equal).sum())
    total = concordant + discordant + tied
    return (concordant + tied / 2) / total if total > 0 else math.nan


def _event_block_start(t: FloatArray, e: IntArray) -> IntArray:
    """Position (in the sorted order) of the first event sharing each subject's time."""
    n = t.size
    pos = np.arange(n)
    is_first_event = (e == 1) & ~np.concatenate(([False], (t[1:] == t[:-1]) & (e[:-1] == 1)))
    start = np.where(is_first_event, pos, 0)
    return np.maximum.accumulate(start)


class CoxPH:
    """Cox proportional hazards model, Efron ties (as ``survival::coxph``).

    >>> cox = CoxPH().fit(df, time="months", event="cr", covariates=["age", "lavage"])
    >>> cox.summary           # coef, se, hr, lower, upper, z, p_value per covariate
    >>> cox.check_assumptions()   # cox.zph table
    """

    method = "Cox proportional hazards, Efron ties, Wald intervals"

    def __init__(self, *, conf_level: float = 0.95) -> None:
        self.conf_level = v.probability(conf_level, "conf_level", what=_WHAT)
        self.coef_: FloatArray = np.empty(0)
        self.se_: FloatArray = np.empty(0)
        self.variance_: FloatArray = np.empty((0, 0))
        self.loglik_: tuple[float, float] = (math.nan, math.nan)
        self.concordance_: float = math.nan
        self.converged_: bool = False
        self.covariates_: list[str] = []
        self.n_: int = 0
        self.n_events_: int = 0
        self._data: _Data | None = None

    def fit(self, data: pd.DataFrame, *, time: str, event: str, covariates: Sequence[str]) -> Self:
        """Fit the model on ``data``'s ``time``, ``event`` (0/1) and ``covariates`` columns."""
        if not covariates:
            raise v.fail("covariates", "name at least one covariate", what=_WHAT)
        t = v.times(v.column(data, time, what=_WHAT), f"column {time}", what=_WHAT)
        e = v.events(v.column(data, event, what=_WHAT), f"column {event}", what=_WHAT)
        x = v.covariates(data, covariates, what=_WHAT)
        v.not_empty(t.size, what=_WHAT)
        if e.sum() == 0:
            raise v.fail(f"column {event}", "no events: the model cannot be fitted", what=_WHAT)
        constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
        if constant.size:
            raise v.fail(
                f"column {covariates[constant[0]]}",
                "the covariate has the same value in every row",
                what=_WHAT,
            )
        order = np.argsort(t, kind="stable")
        xc = x[order] - x.mean(axis=0)
        d = _prepare(t[order], e[order], xc)
        p = x.shape[1]
        null = _efron(d, np.zeros(p))[0]
        beta, loglik, _score, info, ok = newton(lambda b: _efron(d, b), np.zeros(p))
        problem = finite_estimate_problem(ok, beta, info, xc)
        if problem:
            raise v.fail("covariates", problem, what=_WHAT)
        self.variance_ = np.linalg.inv(info)
        self.coef_, self.loglik_, self.converged_ = beta, (null, loglik), ok
        self.se_ = np.sqrt(np.diag(self.variance_))
        self.concordance_ = concordance(d.time, d.event, d.x @ beta)
        self.covariates_ = list(covariates)
        self.n_, self.n_events_ = int(t.size), int(e.sum())
        self._data = d
        return self

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient, SE, hazard ratio with Wald CI, z and p-value per covariate."""
        if not self.covariates_:
            raise v.fail("model", "call fit() first", what=_WHAT)
        return coefficient_table(self.covariates_, self.coef_, self.se_, self.conf_level)

    @property
    def likelihood_ratio_test(self) -> tuple[float, int, float]:
        """Likelihood-ratio chi-square against the null model, its df and p-value."""
        stat = 2 * (self.loglik_[1] - self.loglik_[0])
        df = len(self.covariates_)
        return stat, df, float(st.chi2.sf(stat, df))

    def check_assumptions(self) -> pd.DataFrame:
        """Proportional-hazards test per covariate and GLOBAL, as ``cox.zph(fit)``."""
        if self._data is None:
            raise v.fail("model", "call fit() first", what=_WHAT)
        u, imat = _zph(self._data, self.coef_)
        p = self.coef_.size
        rows = []
        for j, name in enumerate(self.covariates_):
            kk = [*range(p), p + j]
            stat = float(u[kk] @ np.linalg.solve(imat[np.ix_(kk, kk)], u[kk]))
            rows.append((name, stat, 1, float(st.chi2.sf(stat, 1))))
        stat = float(u @ np.linalg.solve(imat, u))
        rows.append(("GLOBAL", stat, p, float(st.chi2.sf(stat, p))))
        return pd.DataFrame(rows, columns=["covariate", "chisq", "df", "p_value"])

    def to_dict(self) -> dict[str, Any]:
        """The fit, its tests and the coefficient table as JSON-ready values."""
        lrt, df, p = self.likelihood_ratio_test
        return jsonable(
            {
                "method": self.method,
                "n": self.n_,
                "events": self.n_events_,
                "loglik": list(self.loglik_),
                "converged": self.converged_,
                "conf_level": self.conf_level,
                "likelihood_ratio": {"statistic": lrt, "df": df, "p_value": p},
                "concordance": self.concordance_,
                "covariates": self.summary,
            }
        )
