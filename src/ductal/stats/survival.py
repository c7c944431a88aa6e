"""Kaplan–Meier estimates, their quantiles and restricted mean, and the log-rank test.

Everything follows R's ``survival`` package (``survfit``, ``quantile.survfit``, ``print.survfit``'s
restricted mean, ``survdiff``):

* Greenwood variance; ``std_err_log`` is R's ``std.err`` (the standard error of −log S),
  ``std_err`` the standard error of S itself (``summary.survfit``).
* Pointwise intervals ``log`` (default), ``log-log`` and ``plain``, computed as
  ``survival:::survfit_confint`` does (missing where the transform is undefined, e.g. at S = 0).
* Quantiles by R's rule: the first time the curve falls to 1 − p, within a tolerance of
  √ε; on a flat stretch exactly at 1 − p the midpoint of the stretch; missing when the curve or
  band never reaches it. The same rule applied to the bands gives the interval.
* Restricted mean survival up to ``tau`` with R's standard error.
* Log-rank (and stratified log-rank) chi-square as ``survdiff`` with ``rho = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Self

import numpy as np
import pandas as pd
from scipy import stats as st

from ductal.stats import _validate as v
from ductal.stats._json import jsonable
from ductal.stats._validate import ArrayLike, FloatArray, IntArray

ConfType = Literal["log", "log-log", "plain"]
CONF_TYPES: tuple[str, ...] = ("log", "log-log", "plain")
_TOL = math.sqrt(np.finfo(float).eps)
_WHAT = "Kaplan-Meier"


def _z(conf_level: float) -> float:
    return float(st.norm.ppf(1 - (1 - conf_level) / 2))


def _confint(
    surv: FloatArray, se_log: FloatArray, conf_type: str, z: float
) -> tuple[FloatArray, FloatArray]:
    """Return pointwise bounds as ``survival:::survfit_confint`` (se on the log scale)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if conf_type == "plain":
            width = se_log * surv * z
            lower = np.where(np.isnan(width), np.nan, np.maximum(surv - width, 0.0))
            upper = np.where(np.isnan(width), np.nan, np.minimum(surv + width, 1.0))
        elif conf_type == "log":
            s = np.where(surv == 0, np.nan, surv)
            lower = np.exp(np.log(s) - z * se_log)
            upper = np.minimum(np.exp(np.log(s) + z * se_log), 1.0)
        else:
            s = np.where((surv == 0) | (surv == 1), np.nan, surv)
            shift = z * se_log / np.log(s)
            loglog = np.log(-np.log(s))
            lower = np.exp(-np.exp(loglog - shift))
            upper = np.exp(-np.exp(loglog + shift))
    return lower, upper


def _findq(x: FloatArray, y: FloatArray, p: float) -> float:
    """Return the time at which the cumulative curve ``y`` (over ``x``) reaches ``p``, R's way."""
    finite = y[~np.isnan(y)]
    if finite.size == 0 or finite.max() < p:
        return math.nan
    xmax = x[-1]
    keep = ~pd.Series(y).duplicated().to_numpy()
    x, y = x[keep], y[keep]
    if p == 0:
        return float(x[0])
    ok = ~np.isnan(y)
    idx = np.flatnonzero(ok)

    def first_reaching(knots: FloatArray) -> int | None:
        order = np.argsort(knots, kind="stable")
        k, pos = knots[order], idx[order]
        j = int(np.searchsorted(k, p, side="left"))
        if j == k.size or (j == 0 and k[0] != p):
            return None
        return int(pos[j])

    i1 = first_reaching(y[ok] + _TOL)
    i2 = first_reaching(y[ok] - _TOL)
    if i1 is None:
        return math.nan
    if not np.isnan(y[-1]) and abs(p - y[-1]) < _TOL:
        return float((x[i1] + xmax) / 2)
    if i2 is None:
        return math.nan
    return float((x[i1] + x[i2]) / 2)


@dataclass(frozen=True)
class Quantile:
    """A survival-time quantile with its confidence interval (None/NaN when not reached)."""

    probability: float
    estimate: float
    lower: float
    upper: float


@dataclass(frozen=True)
class KMCurve:
    """One Kaplan–Meier curve: a row for every distinct time (events or censorings)."""

    name: str
    time: FloatArray
    n_risk: IntArray
    n_event: IntArray
    n_censor: IntArray
    survival: FloatArray
    std_err_log: FloatArray
    lower: FloatArray
    upper: FloatArray
    conf_type: str
    conf_level: float
    n: int = 0

    @property
    def method(self) -> str:
        return f"Kaplan-Meier, Greenwood variance, {self.conf_type} CI"

    @property
    def std_err(self) -> FloatArray:
        """Standard error of S (Greenwood), as ``summary.survfit`` reports it."""
        with np.errstate(invalid="ignore"):
            return self.survival * self.std_err_log

    @property
    def cumulative_incidence(self) -> FloatArray:
        """1 − S, e.g. the cumulative probability of complete response."""
        return 1 - self.survival

    @property
    def events(self) -> int:
        return int(self.n_event.sum())

    def quantile(self, probability: float) -> Quantile:
        """Return the time by which a fraction ``probability`` has had the event, with its CI."""
        p = v.probability(probability, "probability", what=_WHAT, open_interval=False)
        x = np.concatenate(([0.0], self.time))

        def q(curve: FloatArray) -> float:
            return _findq(x, np.concatenate(([0.0], 1 - curve)), p)

        return Quantile(p, q(self.survival), q(self.lower), q(self.upper))

    @property
    def median(self) -> Quantile:
        """Median survival time with its CI (R's rule); NaN where not reached."""
        return self.quantile(0.5)

    def rmst(self, tau: float | None = None) -> tuple[float, float]:
        """Return the restricted mean survival time up to ``tau`` and its standard error.

        ``tau`` defaults to the last time of the curve (R's ``rmean="individual"``).
        """
        end = float(self.time[-1]) if tau is None else float(tau)
        if not end > 0:
            raise v.fail("tau", f"must be positive, got {tau}", what=_WHAT)
        d, n = self.n_event.astype(float), self.n_risk.astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            hh = np.where(n - d == 0, 0.0, d / (n * (n - d)))
        keep = self.time <= end
        if not keep.any():
            return end, 0.0
        times = np.concatenate((self.time[keep], [end]))
        surv = self.survival[keep]
        heights = np.concatenate(([1.0], surv))
        rect = np.diff(np.concatenate(([0.0], times))) * heights
        beyond = np.cumsum(rect[::-1])[::-1][1:]  # area from each time to tau
        var = float(np.sum(beyond**2 * hh[keep]))
        return float(rect.sum()), math.sqrt(var)

    def at(self, times: ArrayLike) -> pd.DataFrame:
        """Return S, its SE and interval, 1 − S and n at risk at each of ``times``.

        Like ``summary(fit, times=, extend=TRUE)``: before the first time S = 1, after the last
        the last value is carried forward (check ``n_risk``, which is then 0).
        """
        t = v.times(times, "times", what=_WHAT)
        idx = np.searchsorted(self.time, t, side="right") - 1
        before = idx < 0
        j = np.maximum(idx, 0)
        first_at_or_after = np.searchsorted(self.time, t, side="left")
        n_risk = np.where(
            first_at_or_after < self.time.size,
            self.n_risk[np.minimum(first_at_or_after, self.time.size - 1)],
            0,
        )
        surv = np.where(before, 1.0, self.survival[j])
        se = np.where(before, 0.0, self.std_err[j])
        lower = np.where(before, 1.0, self.lower[j])
        upper = np.where(before, 1.0, self.upper[j])
        return pd.DataFrame(
            {
                "time": t,
                "n_risk": n_risk,
                "survival": surv,
                "std_err": se,
                "lower": lower,
                "upper": upper,
                "cumulative_incidence": 1 - surv,
                "ci_lower": 1 - upper,
                "ci_upper": 1 - lower,
            }
        )

    @property
    def table(self) -> pd.DataFrame:
        """The curve as a DataFrame, one row per distinct time."""
        return pd.DataFrame(
            {
                "time": self.time,
                "n_risk": self.n_risk,
                "n_event": self.n_event,
                "n_censor": self.n_censor,
                "survival": self.survival,
                "std_err": self.std_err,
                "lower": self.lower,
                "upper": self.upper,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The curve, its median and CI as JSON-ready values (missing numbers are ``None``)."""
        med = self.median
        return jsonable(
            {
                "name": self.name,
                "n": self.n,
                "events": self.events,
                **self.table.to_dict(orient="list"),
                "median": med.estimate,
                "median_lower": med.lower,
                "median_upper": med.upper,
            }
        )


def _km_from_counts(
    name: str,
    time: FloatArray,
    n_event: FloatArray,
    n_total: FloatArray,
    conf_type: str,
    conf_level: float,
) -> KMCurve:
    n_risk = np.cumsum(n_total[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1 - n_event / n_risk)
        terms = np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event)), 0.0)
    se_log = np.sqrt(np.cumsum(terms))
    lower, upper = _confint(surv, se_log, conf_type, _z(conf_level))
    return KMCurve(
        name=name,
        time=time,
        n_risk=n_risk.astype(np.int64),
        n_event=n_event.astype(np.int64),
        n_censor=(n_total - n_event).astype(np.int64),
        survival=surv,
        std_err_log=se_log,
        lower=lower,
        upper=upper,
        conf_type=conf_type,
        conf_level=conf_level,
        n=int(n_total.sum()),
    )


def _curve(name: str, t: FloatArray, e: IntArray, conf_type: str, conf_level: float) -> KMCurve:
    times, inverse = np.unique(t, return_inverse=True)
    n_event = np.bincount(inverse, weights=e, minlength=times.size).astype(np.float64)
    n_total = np.bincount(inverse, minlength=times.size).astype(np.float64)
    return _km_from_counts(name, times, n_event, n_total, conf_type, conf_level)


def _check_options(conf_type: str, conf_level: float) -> float:
    v.choice(conf_type, CONF_TYPES, "conf_type", what=_WHAT)
    return v.probability(conf_level, "conf_level", what=_WHAT)


def _inputs(
    time: ArrayLike, event: ArrayLike, time_field: str, event_field: str
) -> tuple[FloatArray, IntArray]:
    t = v.times(time, time_field, what=_WHAT)
    e = v.events(event, event_field, what=_WHAT)
    v.same_length({time_field: t.size, event_field: e.size}, what=_WHAT)
    v.not_empty(t.size, what=_WHAT)
    return t, e


def kaplan_meier(
    time: ArrayLike,
    event: ArrayLike,
    *,
    conf_type: ConfType = "log",
    conf_level: float = 0.95,
    name: str = "all",
) -> KMCurve:
    """Return the Kaplan–Meier curve of one group (``event`` is 1 for an event, 0 if censored)."""
    conf_level = _check_options(conf_type, conf_level)
    t, e = _inputs(time, event, "time", "event")
    return _curve(name, t, e, conf_type, conf_level)


@dataclass(frozen=True)
class LogRankResult:
    """Log-rank test of equal survival between groups (optionally within strata)."""

    statistic: float
    df: int
    p_value: float
    groups: list[str]
    observed: FloatArray
    expected: FloatArray
    method: str

    @property
    def summary(self) -> pd.DataFrame:
        """Observed and expected events per group, with the chi-square and p-value."""
        return pd.DataFrame(
            {
                "group": self.groups,
                "observed": self.observed,
                "expected": self.expected,
                "chisq": self.statistic,
                "df": self.df,
                "p_value": self.p_value,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The test as JSON-ready values."""
        return jsonable(
            {
                "statistic": self.statistic,
                "df": self.df,
                "p_value": self.p_value,
                "method": self.method,
                "groups": self.groups,
                "observed": self.observed,
                "expected": self.expected,
            }
        )


def _logrank_parts(
    t: FloatArray, e: IntArray, g: IntArray, k: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return observed, expected and variance matrix of the log-rank score in one stratum."""
    times, inv = np.unique(t, return_inverse=True)
    cells = inv * k + g
    size = times.size * k
    deaths = np.bincount(cells, weights=e, minlength=size).reshape(times.size, k)
    total = np.bincount(cells, minlength=size).reshape(times.size, k).astype(float)
    at_risk = np.cumsum(total[::-1], axis=0)[::-1]
    n = at_risk.sum(axis=1)
    d = deaths.sum(axis=1)
    use = d > 0
    at_risk, deaths, n, d = at_risk[use], deaths[use], n[use], d[use]
    frac = at_risk / n[:, None]
    expected = (frac * d[:, None]).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    var = np.diag((w[:, None] * frac).sum(axis=0)) - (
        w[:, None, None] * frac[:, :, None] * frac[:, None, :]
    ).sum(axis=0)
    return deaths.sum(axis=0), expected, var


def _logrank(
    t: FloatArray, e: IntArray, g: IntArray, names: list[str], s: IntArray, n_strata: int
) -> LogRankResult:
    k = len(names)
    obs, exp_, var = np.zeros(k), np.zeros(k), np.zeros((k, k))
    for code in range(n_strata):
        rows = s == code
        o, ex, vv = _logrank_parts(t[rows], e[rows], g[rows], k)
        obs, exp_, var = obs + o, exp_ + ex, var + vv
    use = np.flatnonzero(exp_ > 0)
    if use.size < 2:
        stat, df = 0.0, 0
    else:
        keep = use[1:]
        diff = (obs - exp_)[keep]
        vv = var[np.ix_(keep, keep)]
        df = int(np.linalg.matrix_rank(vv))
        if df == keep.size:
            stat = float(diff @ np.linalg.solve(vv, diff))
        else:  # e.g. everyone failing at one time: no information, generalised inverse
            stat = float(diff @ np.linalg.pinv(vv) @ diff) if df else 0.0
    p = float(st.chi2.sf(stat, df)) if df > 0 else math.nan
    method = "log-rank test" + (", stratified" if n_strata > 1 else "")
    return LogRankResult(stat, df, p, names, obs, exp_, method)


def logrank_test(
    time: ArrayLike,
    event: ArrayLike,
    group: ArrayLike,
    *,
    strata: ArrayLike | None = None,
) -> LogRankResult:
    """Return the log-rank test comparing the groups (stratified when ``strata`` is given).

    With no events at all the statistic is 0 on 0 degrees of freedom and the p-value NaN.
    """
    t, e = _inputs(time, event, "time", "event")
    g, names = v.labels(group, t.size, "group", what="the log-rank test")
    if len(names) < 2:
        raise v.fail("group", "the log-rank test needs at least two groups", what=_WHAT)
    s, strata_names = v.labels(strata, t.size, "strata", what="the log-rank test")
    return _logrank(t, e, g, names, s, len(strata_names))


class KaplanMeier:
    """Kaplan–Meier estimator for one or several groups, lifelines-style.

    >>> km = KaplanMeier(conf_type="log").fit(df["months"], df["cr"], group=df["arm"])
    >>> km.curves_["lavage"].median, km.logrank_.p_value
    """

    def __init__(self, *, conf_type: ConfType = "log", conf_level: float = 0.95) -> None:
        self.conf_level = _check_options(conf_type, conf_level)
        self.conf_type = conf_type
        self.curves_: dict[str, KMCurve] = {}
        self.logrank_: LogRankResult | None = None

    @property
    def method(self) -> str:
        return f"Kaplan-Meier, Greenwood variance, {self.conf_type} CI"

    def fit(
        self,
        time: ArrayLike,
        event: ArrayLike,
        group: ArrayLike | None = None,
        *,
        strata: ArrayLike | None = None,
        time_field: str = "time",
        event_field: str = "event",
        group_field: str = "group",
    ) -> Self:
        """Fit one curve per group; with two or more groups also run the log-rank test.

        The ``*_field`` names are used in error messages (e.g. "column months").
        """
        t, e = _inputs(time, event, time_field, event_field)
        g, names = v.labels(group, t.size, group_field, what=_WHAT)
        self.curves_ = {
            name: _curve(name, t[g == code], e[g == code], self.conf_type, self.conf_level)
            for code, name in enumerate(names)
        }
        s, strata_names = v.labels(strata, t.size, "strata", what=_WHAT)
        self.logrank_ = _logrank(t, e, g, names, s, len(strata_names)) if len(names) > 1 else None
        return self

    def _fitted(self) -> dict[str, KMCurve]:
        if not self.curves_:
            raise v.fail("model", "call fit() first", what=_WHAT)
        return self.curves_

    @property
    def summary(self) -> pd.DataFrame:
        """One row per group: n, events, median with CI and restricted mean."""
        rows = []
        for c in self._fitted().values():
            med = c.median
            rmst, rmst_se = c.rmst()
            rows.append(
                {
                    "group": c.name,
                    "n": c.n,
                    "events": c.events,
                    "median": med.estimate,
                    "median_lower": med.lower,
                    "median_upper": med.upper,
                    "rmst": rmst,
                    "rmst_se": rmst_se,
                    "tau": float(c.time[-1]),
                    "method": c.method,
                }
            )
        return pd.DataFrame(rows)

    def at(self, times: ArrayLike) -> pd.DataFrame:
        """Estimates of every group at ``times`` (see :meth:`KMCurve.at`), stacked."""
        frames = [c.at(times).assign(group=c.name) for c in self._fitted().values()]
        return pd.concat(frames, ignore_index=True)

    def to_dict(self) -> dict[str, Any]:
        """Groups, curves and (with groups) the log-rank test as JSON-ready values."""
        out: dict[str, Any] = {
            "method": self.method,
            "conf_type": self.conf_type,
            "conf_level": self.conf_level,
            "groups": [c.to_dict() for c in self._fitted().values()],
        }
        if self.logrank_ is not None:
            out["logrank"] = self.logrank_.to_dict()
        return out
