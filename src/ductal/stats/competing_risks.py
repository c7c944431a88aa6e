"""Competing risks: cumulative incidence (Aalen–Johansen) with Gray's test, and Fine–Gray.

Both follow R's ``cmprsk`` (Gray 1988; Fine & Gray 1999) to machine precision:

* :func:`cumulative_incidence` gives, per cause and group, the Aalen–Johansen estimate at each
  time the cause occurs and the variance ``cmprsk::cuminc`` reports (Gray's delta-method
  variance, with its correction for tied times), and Gray's K-sample test per cause, optionally
  stratified.
* :class:`FineGray` fits the proportional subdistribution hazards model as ``cmprsk::crr``:
  Breslow handling of ties, inverse-probability-of-censoring weights from the Kaplan–Meier
  estimate of the censoring distribution just before each time, and the robust (sandwich)
  variance of Fine and Gray including the term for estimating the censoring distribution.

Status coding: 0 (``censor_code``) is censored, any other whole number is a cause.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as st

from ductal.stats import _validate as v
from ductal.stats._json import jsonable
from ductal.stats._optim import coefficient_table, finite_estimate_problem, newton
from ductal.stats._validate import ArrayLike, FloatArray, IntArray

_WHAT_CIF = "cumulative incidence"
_WHAT_FG = "Fine-Gray regression"


# ---------------------------------------------------------------- cumulative incidence


@dataclass(frozen=True)
class IncidenceCurve:
    """Cumulative incidence of one cause in one group, at the times that cause occurs."""

    cause: int
    group: str
    time: FloatArray
    estimate: FloatArray
    variance: FloatArray
    last_time: float

    @property
    def std_err(self) -> FloatArray:
        return np.sqrt(self.variance)

    def at(self, times: ArrayLike) -> pd.DataFrame:
        """Return estimate and variance at ``times`` (as ``cmprsk::timepoints``).

        0 before the first event; missing (NaN) after the group's last follow-up time.
        """
        t = v.times(times, "times", what=_WHAT_CIF)
        idx = np.searchsorted(self.time, t, side="right") - 1
        # A leading 0 stands for "before the first event" (and for curves with no events).
        est = np.concatenate(([0.0], self.estimate))[idx + 1]
        var = np.concatenate(([0.0], self.variance))[idx + 1]
        beyond = t > self.last_time
        est = np.where(beyond, np.nan, est)
        var = np.where(beyond, np.nan, var)
        return pd.DataFrame({"time": t, "estimate": est, "variance": var})

    def to_dict(self) -> dict[str, Any]:
        """The curve as JSON-ready values."""
        return jsonable(
            {
                "cause": self.cause,
                "group": self.group,
                "time": self.time,
                "estimate": self.estimate,
                "variance": self.variance,
            }
        )


@dataclass(frozen=True)
class GrayTest:
    """Gray's test that a cause's cumulative incidence is the same in every group."""

    cause: int
    statistic: float
    df: int
    p_value: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "cause": self.cause,
                "statistic": self.statistic,
                "df": self.df,
                "p_value": self.p_value,
                "method": self.method,
            }
        )


@dataclass(frozen=True)
class CumulativeIncidence:
    """Curves per (cause, group) and, with two or more groups, Gray's test per cause."""

    curves: list[IncidenceCurve]
    tests: list[GrayTest]
    groups: list[str]
    causes: list[int]
    method: str = "Aalen-Johansen cumulative incidence, variance as cmprsk::cuminc"

    def curve(self, cause: int, group: str = "all") -> IncidenceCurve:
        """The curve of ``cause`` in ``group``."""
        for c in self.curves:
            if c.cause == cause and c.group == group:
                return c
        raise v.fail("cause", f"no curve for cause {cause} in group {group!r}", what=_WHAT_CIF)

    def at(self, times: ArrayLike) -> pd.DataFrame:
        """Estimates of every curve at ``times``, stacked with ``cause`` and ``group``."""
        frames = [c.at(times).assign(cause=c.cause, group=c.group) for c in self.curves]
        return pd.concat(frames, ignore_index=True)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per curve: events, final estimate and its standard error, Gray's p-value."""
        p = {t.cause: t.p_value for t in self.tests}
        rows = [
            {
                "cause": c.cause,
                "group": c.group,
                "event_times": c.time.size,
                "final_estimate": c.estimate[-1] if c.time.size else 0.0,
                "final_std_err": math.sqrt(c.variance[-1]) if c.time.size else 0.0,
                "gray_p_value": p.get(c.cause, math.nan),
            }
            for c in self.curves
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """Curves and tests as JSON-ready values."""
        return {
            "method": self.method,
            "groups": self.groups,
            "causes": self.causes,
            "curves": [c.to_dict() for c in self.curves],
            "tests": [t.to_dict() for t in self.tests],
        }


def _incidence_curve(
    t: FloatArray, cause_hit: IntArray, any_hit: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Aalen–Johansen estimate and Gray's variance at the times of the cause (sorted input)."""
    times, inv = np.unique(t, return_inverse=True)
    d1 = np.bincount(inv, weights=cause_hit, minlength=times.size)
    d = np.bincount(inv, weights=any_hit, minlength=times.size)
    d2 = d - d1
    total = np.bincount(inv, minlength=times.size).astype(np.float64)
    rs = np.cumsum(total[::-1])[::-1]
    surv_after = np.cumprod(1 - d / rs)  # all-cause Kaplan–Meier, right-continuous
    fk = np.concatenate(([1.0], surv_after[:-1]))  # ... and just before each time
    f = np.cumsum(fk * d1 / rs)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_s = np.where(surv_after > 0, 1 / surv_after, 0.0)

        def tie_factor(k: FloatArray) -> FloatArray:
            return np.where(k > 1, 1 - (k - 1) / (rs - 1), 1.0)

        # Contribution of other-cause failures (only while someone survives).
        t6 = fk**2 * tie_factor(d2) * d2 / rs**2
        other = (d2 > 0) & (surv_after > 0)
        t3, t4 = inv_s, f * inv_s
        v1 = np.where(other, t4 * t4 * t6, 0.0)
        v2 = np.where(other, t3 * t4 * t6, 0.0)
        v3 = np.where(other, t3 * t3 * t6, 0.0)
        # Contribution of failures from the cause of interest.
        t6 = fk**2 * tie_factor(d1) * d1 / rs**2
        own = d1 > 0
        t4 = 1 + inv_s * f
        v1 = v1 + np.where(own, t4 * t4 * t6, 0.0)
        v2 = v2 + np.where(own, inv_s * t4 * t6, 0.0)
        v3 = v3 + np.where(own, inv_s * inv_s * t6, 0.0)
    c1, c2, c3 = np.cumsum(v1), np.cumsum(v2), np.cumsum(v3)
    var = c1 + f * f * c3 - 2 * f * c2
    return times[own], f[own], var[own]


def _gray_stratum(
    t: FloatArray, code: IntArray, g: IntArray, ng: int
) -> tuple[FloatArray, FloatArray]:
    """Score and variance of Gray's test (ρ = 0) in one stratum.

    ``code`` is 0 censored, 1 the cause tested, 2 any other cause. Notation follows Gray (1988)
    and cmprsk's ``crstm``: per group, ``skmm``/``skm`` the all-cause Kaplan–Meier just
    before/after the current time, ``f1m``/``f1`` the cause's cumulative incidence likewise,
    ``fm``/``f`` the pooled cumulative incidence; ``a`` and ``c`` build the score's variance.
    """
    ng1 = ng - 1
    times, inv = np.unique(t, return_inverse=True)
    cells = inv * ng + g
    size = times.size * ng

    def counts(mask: npt.NDArray[np.bool_]) -> FloatArray:
        w = mask.astype(np.float64)
        return np.bincount(cells, weights=w, minlength=size).reshape(times.size, ng)

    d1_all, d2_all = counts(code == 1), counts(code == 2)
    tot_all = counts(np.ones(code.size, dtype=bool))
    rs = tot_all.sum(axis=0)
    f1m, skmm = np.zeros(ng), np.ones(ng)
    v3, v2 = np.zeros(ng), np.zeros((ng1, ng))
    c, var, score = np.zeros((ng, ng)), np.zeros((ng1, ng1)), np.zeros(ng1)
    fm = 0.0
    for k in range(times.size):
        d1, d2 = d1_all[k], d2_all[k]
        nd1, nd2 = d1.sum(), d2.sum()
        if nd1 > 0 or nd2 > 0:
            act = rs > 0  # groups with someone still at risk
            rs_a, skmm_a = np.where(act, rs, 1.0), np.where(act, skmm, 1.0)
            skm = np.where(act, skmm * (rs - d1 - d2) / rs_a, skmm)
            f1 = np.where(act, f1m + skmm * d1 / rs_a, f1m)
            u = np.where(act, rs / skmm_a, 0.0)
            tr = u.sum()
            tq = np.where(act, rs * (1 - f1m) / skmm_a, 0.0).sum()
            f = fm + nd1 / tr
            a = np.diag(u) - np.outer(u, u) / tr
            c += a * nd1 / (tr * (1 - fm))
            expected = nd1 * rs * (1 - f1m) / (skmm_a * tq)
            score += np.where(act, d1 - expected, 0.0)[:ng1]
            if nd1 > 0:
                for j in np.flatnonzero(act):
                    t4 = 1 - (1 - f) / skm[j] if skm[j] > 0 else 1.0
                    t5 = 1 - (nd1 - 1) / (tr * skmm[j] - 1) if nd1 > 1 else 1.0
                    t3 = t5 * skmm[j] * nd1 / (tr * rs[j])
                    v3[j] += t4 * t4 * t3
                    col = a[:ng1, j] - t4 * c[:ng1, j]
                    v2[:, j] += col * t4 * t3
                    var += np.outer(col, col) * t3
            if nd2 > 0:
                for j in np.flatnonzero((skm > 0) & (d2 > 0)):
                    t4 = (1 - f) / skm[j]
                    t5 = 1 - (d2[j] - 1) / (rs[j] - 1) if d2[j] > 1 else 1.0
                    t3 = t5 * skmm[j] ** 2 * d2[j] / rs[j] ** 2
                    v3[j] += t4 * t4 * t3
                    col = t4 * c[:ng1, j]
                    v2[:, j] -= col * t4 * t3
                    var += np.outer(col, col) * t3
            fm, f1m, skmm = f, f1, skm
        rs = rs - tot_all[k]
    cc = c[:ng1]
    var = var + (cc * v3) @ cc.T + cc @ v2.T + v2 @ cc.T
    return score, var


def _gray_test(
    t: FloatArray, status: IntArray, cause: int, g: IntArray, ng: int, s: IntArray, ns: int
) -> GrayTest:
    code = np.where(status == cause, 1, np.where(status != 0, 2, 0))
    score, var = np.zeros(ng - 1), np.zeros((ng - 1, ng - 1))
    for k in range(ns):
        rows = s == k
        sc, vv = _gray_stratum(t[rows], code[rows], g[rows], ng)
        score, var = score + sc, var + vv
    df = ng - 1
    if np.linalg.matrix_rank(var) < df:
        stat = math.nan
    else:
        stat = float(score @ np.linalg.solve(var, score))
    method = "Gray's test" + (", stratified" if ns > 1 else "")
    return GrayTest(cause, stat, df, float(st.chi2.sf(stat, df)), method)


def cumulative_incidence(
    time: ArrayLike,
    status: ArrayLike,
    group: ArrayLike | None = None,
    *,
    strata: ArrayLike | None = None,
    causes: Sequence[int] | None = None,
    time_field: str = "time",
    status_field: str = "status",
    group_field: str = "group",
) -> CumulativeIncidence:
    """Return cumulative incidence curves per cause and group, with Gray's test per cause.

    ``status`` is 0 for censored and a whole-number code per cause (1 = e.g. complete
    response, 2 = a competing event such as surgery). ``causes`` restricts the curves to some
    causes; each must occur in the data. Matches ``cmprsk::cuminc(time, status, group, strata)``.
    """
    t = v.times(time, time_field, what=_WHAT_CIF)
    s_codes = v.status(status, status_field, what=_WHAT_CIF)
    v.same_length({time_field: t.size, status_field: s_codes.size}, what=_WHAT_CIF)
    v.not_empty(t.size, what=_WHAT_CIF)
    g, names = v.labels(group, t.size, group_field, what=_WHAT_CIF)
    st_codes, st_names = v.labels(strata, t.size, "strata", what=_WHAT_CIF)
    present = sorted(int(c) for c in np.unique(s_codes[s_codes != 0]))
    if causes is None:
        wanted = present
    else:
        wanted = [int(c) for c in causes]
        for c in wanted:
            v.cause_present(s_codes, c, status_field, what=_WHAT_CIF)
    order = np.argsort(t, kind="stable")
    t, s_codes, g, st_codes = t[order], s_codes[order], g[order], st_codes[order]
    curves: list[IncidenceCurve] = []
    for cause in wanted:
        for code, name in enumerate(names):
            rows = g == code
            tt, ss = t[rows], s_codes[rows]
            times, est, var = _incidence_curve(
                tt, (ss == cause).astype(np.int64), (ss != 0).astype(np.int64)
            )
            curves.append(IncidenceCurve(cause, name, times, est, var, float(tt[-1])))
    tests = (
        [_gray_test(t, s_codes, c, g, len(names), st_codes, len(st_names)) for c in wanted]
        if len(names) > 1
        else []
    )
    return CumulativeIncidence(curves, tests, names, wanted)


# ---------------------------------------------------------------- Fine–Gray


def _censoring_before(t: FloatArray, censored: IntArray) -> FloatArray:
    """Kaplan–Meier of the censoring distribution just before each (sorted) time, as crr.

    ``cmprsk::crr`` evaluates it at ``t * (1 - eps)``, which at t = 0 is G(0) itself rather
    than G(0−); that is kept so that results agree with R.
    """
    times, inv = np.unique(t, return_inverse=True)
    c = np.bincount(inv, weights=censored, minlength=times.size)
    total = np.bincount(inv, minlength=times.size).astype(np.float64)
    rs = np.cumsum(total[::-1])[::-1]
    after = np.cumprod(1 - c / rs)
    before = np.concatenate(([1.0], after[:-1]))
    if times[0] == 0:
        before[0] = after[0]
    return before[inv]


@dataclass(frozen=True)
class _FGData:
    time: FloatArray
    code: IntArray  # 1 cause of interest, 2 competing, 0 censored
    x: FloatArray
    g_before: FloatArray
    fail: IntArray  # indices of failures from the cause of interest


def _fg_weights(d: _FGData, beta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Risk-set weights (failures × subjects) times exp(xβ), and exp(xβ)."""
    risk = np.exp(d.x @ beta)
    tf = d.time[d.fail][:, None]
    later = d.time[None, :] >= tf
    competed = (d.time[None, :] < tf) & (d.code[None, :] == 2)
    ratio = d.g_before[d.fail][:, None] / d.g_before[None, :]
    w = np.where(later, 1.0, np.where(competed, ratio, 0.0))
    return w * risk[None, :], risk


def _fg_loglik(d: _FGData, beta: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    """Log partial likelihood, score and information of the subdistribution hazards model."""
    w, _ = _fg_weights(d, beta)
    s0 = w.sum(axis=1)
    s1 = w @ d.x
    xbar = s1 / s0[:, None]
    xf = d.x[d.fail]
    loglik = float(np.sum(xf @ beta - np.log(s0)))
    score = (xf - xbar).sum(axis=0)
    weight = (w / s0[:, None]).sum(axis=0)
    info = (d.x * weight[:, None]).T @ d.x - xbar.T @ xbar
    return loglik, score, info


def _fg_variance(d: _FGData, beta: FloatArray, info: FloatArray) -> FloatArray:
    """Fine–Gray sandwich variance, including the censoring-distribution term (as crr)."""
    n, p = d.x.shape
    w, risk = _fg_weights(d, beta)
    s0 = w.sum(axis=1)
    xbar = (w @ d.x) / s0[:, None]
    # eta: score residual of each subject.
    ws = w / s0[:, None]
    eta = ws.T @ xbar - d.x * ws.sum(axis=0)[:, None]
    eta[d.fail] += d.x[d.fail] - xbar
    # psi: the part due to estimating the censoring distribution G. For each distinct time u,
    #   q(u) = sum over failures f with t_f >= u of G(t_f-)/S0_f * sum over competing failures
    #          j with t_j < u of exp(x_j b)/G(t_j-) * (x_j - xbar_f),
    # and psi_i = q(t_i)/Y(t_i) [if i is censored] - sum over censorings c with t_c <= t_i of
    # q(t_c)/Y(t_c)^2, with Y the number at risk (Fine & Gray 1999, section 3).
    times, first = np.unique(d.time, return_index=True)
    at_risk = n - first  # subjects with time >= each distinct time (input sorted)
    comp = d.code == 2
    cum0 = np.concatenate(([0.0], np.cumsum(np.where(comp, risk / d.g_before, 0.0))))
    cum1 = np.vstack(
        (
            np.zeros(p),
            np.cumsum(np.where(comp[:, None], (risk / d.g_before)[:, None] * d.x, 0.0), axis=0),
        )
    )
    c0, c1 = cum0[first], cum1[first]  # sums over competing failures strictly before each time
    tf = d.time[d.fail]
    gf = d.g_before[d.fail] / s0
    start = np.searchsorted(tf, times, side="left")  # failures at or after each time
    rev0 = np.concatenate((np.cumsum(gf[::-1])[::-1], [0.0]))
    rev1 = np.vstack((np.cumsum((gf[:, None] * xbar)[::-1], axis=0)[::-1], np.zeros(p)))
    q = c1 * rev0[start][:, None] - c0[:, None] * rev1[start]
    cens = np.bincount(np.searchsorted(times, d.time), weights=d.code == 0, minlength=times.size)
    dlam = -np.cumsum(cens[:, None] * q / (at_risk**2)[:, None], axis=0)
    slot = np.searchsorted(times, d.time)
    psi = dlam[slot] + np.where((d.code == 0)[:, None], q[slot] / at_risk[slot][:, None], 0.0)
    u = eta + psi
    h = np.linalg.inv(info)
    return h @ (u.T @ u) @ h.T


class FineGray:
    """Fine–Gray proportional subdistribution hazards model (as ``cmprsk::crr``).

    >>> fg = FineGray(cause=1).fit(df, time="months", status="status", covariates=["age"])
    >>> fg.summary  # coef, se, hr, lower, upper, p_value per covariate
    """

    method = "Fine-Gray subdistribution hazards, IPCW, robust variance as cmprsk::crr"

    def __init__(self, *, cause: int = 1, conf_level: float = 0.95) -> None:
        self.cause = cause
        self.conf_level = v.probability(conf_level, "conf_level", what=_WHAT_FG)
        self.coef_: FloatArray = np.empty(0)
        self.se_: FloatArray = np.empty(0)
        self.variance_: FloatArray = np.empty((0, 0))
        self.loglik_: float = math.nan
        self.converged_: bool = False
        self.covariates_: list[str] = []
        self.n_: int = 0
        self.n_events_: int = 0

    def fit(self, data: pd.DataFrame, *, time: str, status: str, covariates: Sequence[str]) -> Self:
        """Fit the model on ``data``'s ``time``, ``status`` and ``covariates`` columns."""
        if not covariates:
            raise v.fail("covariates", "name at least one covariate", what=_WHAT_FG)
        t = v.times(v.column(data, time, what=_WHAT_FG), f"column {time}", what=_WHAT_FG)
        s = v.status(v.column(data, status, what=_WHAT_FG), f"column {status}", what=_WHAT_FG)
        v.cause_present(s, self.cause, f"column {status}", what=_WHAT_FG)
        x = v.covariates(data, covariates, what=_WHAT_FG)
        order = np.argsort(t, kind="stable")
        t, s, x = t[order], s[order], x[order]
        code = np.where(s == self.cause, 1, np.where(s != 0, 2, 0))
        d = _FGData(
            time=t,
            code=code,
            x=x,
            g_before=_censoring_before(t, (code == 0).astype(np.int64)),
            fail=np.flatnonzero(code == 1),
        )
        beta, loglik, _score, info, ok = newton(lambda b: _fg_loglik(d, b), np.zeros(x.shape[1]))
        problem = finite_estimate_problem(ok, beta, info, x)
        if problem:
            raise v.fail("covariates", problem, what=_WHAT_FG)
        self.coef_, self.loglik_, self.converged_ = beta, loglik, ok
        self.variance_ = _fg_variance(d, beta, info)
        self.se_ = np.sqrt(np.diag(self.variance_))
        self.covariates_ = list(covariates)
        self.n_, self.n_events_ = int(t.size), int(d.fail.size)
        return self

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient, robust SE, subdistribution HR with CI and p-value per covariate."""
        if not self.covariates_:
            raise v.fail("model", "call fit() first", what=_WHAT_FG)
        return coefficient_table(self.covariates_, self.coef_, self.se_, self.conf_level)

    def to_dict(self) -> dict[str, Any]:
        """The fit as JSON-ready values."""
        return jsonable(
            {
                "method": self.method,
                "cause": self.cause,
                "n": self.n_,
                "events": self.n_events_,
                "loglik": self.loglik_,
                "converged": self.converged_,
                "conf_level": self.conf_level,
                "covariates": self.summary,
            }
        )
