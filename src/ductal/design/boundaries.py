"""Group-sequential boundaries for a one-sided test of a normal statistic.

Designs: O'Brien–Fleming (``obf``) and Pocock (``pocock``) boundaries (constant times
t^-1/2 and constant), and Lan–DeMets alpha spending of O'Brien–Fleming type (``asOF``,
alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt t)) and of Pocock type (``asP``,
alpha(t) = alpha log(1 + (e - 1) t)), as ``rpact::getDesignGroupSequential`` with ``sided = 1``
defines them. Crossing probabilities come from the recursive numerical integration of
Armitage, McPherson & Rowe (1969) as set out by Jennison & Turnbull (2000, ch. 19): the density
of Z_k on the continuation region is carried from look to look on a grid and integrated by
Simpson's rule — deterministic, no Monte Carlo. The drift giving power 1 - beta yields the
maximum sample size inflation over a fixed design and the expected sample sizes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

from ductal.design import _checks
from ductal.errors import Problem

BoundaryType = Literal["obf", "pocock", "asOF", "asP"]
BOUNDARY_TYPES: tuple[str, ...] = ("obf", "pocock", "asOF", "asP")
_LOWER = 9.0  # the continuation density is integrated from mean - 9 sd upwards
_POINTS = 401  # Simpson points per look (odd)
_XTOL = 1e-13


def _simpson_weights(m: int, h: float) -> np.ndarray:
    w = np.ones(m)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    return w * h / 3.0


def _upper_tail(x: np.ndarray | float) -> np.ndarray:
    return np.asarray(special.ndtr(-np.asarray(x)), dtype=float)


class _Recursion:
    """Exit probabilities of a one-sided group-sequential test, look by look, at one drift."""

    def __init__(self, t: np.ndarray, drift: float) -> None:
        self.t = t
        self.drift = drift
        self.grid: np.ndarray | None = None  # grid points of Z_{k-1} on the continuation region
        self.dens: np.ndarray | None = None  # Simpson-weighted sub-density there
        self.k = 0

    def cross(self, bound: float) -> float:
        """Return P(no earlier crossing, Z_k >= bound) for the next look."""
        k, t, theta = self.k, self.t, self.drift
        if k == 0:
            return float(_upper_tail(bound - theta * np.sqrt(t[0])))
        assert self.grid is not None and self.dens is not None
        dt = t[k] - t[k - 1]
        mean = (self.grid * np.sqrt(t[k - 1]) + theta * dt) / np.sqrt(dt)
        return float(np.dot(self.dens, _upper_tail(bound * np.sqrt(t[k] / dt) - mean)))

    def advance(self, bound: float) -> None:
        """Condition on not crossing ``bound`` at the current look and move to the next."""
        k, t, theta = self.k, self.t, self.drift
        lo = theta * np.sqrt(t[k]) - _LOWER
        hi = max(bound, lo + 1e-9)
        z = np.linspace(lo, hi, _POINTS)
        w = _simpson_weights(_POINTS, (hi - lo) / (_POINTS - 1))
        if k == 0:
            f = stats.norm.pdf(z - theta * np.sqrt(t[0]))
        else:
            assert self.grid is not None and self.dens is not None
            dt = t[k] - t[k - 1]
            scale = np.sqrt(t[k] / dt)
            arg = (
                z[:, None] * np.sqrt(t[k]) - self.grid[None, :] * np.sqrt(t[k - 1]) - theta * dt
            ) / np.sqrt(dt)
            f = (np.exp(-0.5 * arg * arg) * (scale / np.sqrt(2 * np.pi))) @ self.dens
        self.grid, self.dens = z, f * w
        self.k += 1


def _exit_probabilities(t: np.ndarray, bounds: np.ndarray, drift: float) -> np.ndarray:
    rec = _Recursion(t, drift)
    out = np.empty(len(bounds))
    for k, b in enumerate(bounds):
        out[k] = rec.cross(b)
        if k < len(bounds) - 1:
            rec.advance(b)
    return out


def spending(kind: str, alpha: float, t: np.ndarray) -> np.ndarray:
    """Return the cumulative alpha spent at information fractions t for asOF or asP."""
    if kind == "asOF":
        return np.asarray(2 * _upper_tail(stats.norm.ppf(1 - alpha / 2) / np.sqrt(t)), dtype=float)
    if kind == "asP":
        return np.asarray(alpha * np.log(1 + (np.e - 1) * t), dtype=float)
    raise ValueError(kind)


def _shape(kind: str, t: np.ndarray) -> np.ndarray:
    return np.asarray(1 / np.sqrt(t) if kind == "obf" else np.ones_like(t), dtype=float)


def critical_values(kind: str, alpha: float, t: np.ndarray) -> np.ndarray:
    """Return the upper critical values on the Z scale for information fractions ``t``."""
    if kind in ("obf", "pocock"):
        shape = _shape(kind, t)

        def excess(c: float) -> float:
            return float(_exit_probabilities(t, c * shape, 0.0).sum() - alpha)

        c = optimize.brentq(excess, 0.0, 40.0, xtol=_XTOL)
        return np.asarray(c * shape, dtype=float)
    cum = spending(kind, alpha, t)
    rec = _Recursion(t, 0.0)
    bounds = np.empty(len(t))
    spent = 0.0
    for k in range(len(t)):
        target = cum[k] - spent

        def excess_k(b: float, target: float = target) -> float:
            return rec.cross(b) - target

        bounds[k] = optimize.brentq(excess_k, -10.0, 40.0, xtol=_XTOL)
        spent += rec.cross(bounds[k])
        if k < len(t) - 1:
            rec.advance(bounds[k])
    return bounds


@dataclass(frozen=True)
class GroupSequentialDesign:
    """Boundaries, error spending and characteristics of a one-sided group-sequential test."""

    kind: str
    alpha: float
    beta: float
    information_rates: list[float]
    critical_values: list[float]
    stage_levels: list[float]
    alpha_spent: list[float]
    drift: float
    inflation_factor: float
    rejection_probabilities_h1: list[float]
    power_cumulative: list[float]
    expected_n_h0: float
    expected_n_h01: float
    expected_n_h1: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field, with the method named."""
        return {
            **{k: getattr(self, k) for k in self.__dataclass_fields__},
            "method": "recursive numerical integration (Jennison & Turnbull 2000, ch. 19)",
            "expected_n_note": "expected sample sizes are relative to the fixed-design size",
        }


def _expected_n(t: np.ndarray, exits: np.ndarray, inflation: float) -> float:
    stop = exits.copy()
    stop[-1] = 1 - exits[:-1].sum()
    return float(inflation * np.dot(t, stop))


def group_sequential(
    looks: int,
    alpha: float = 0.025,
    beta: float = 0.2,
    kind: BoundaryType | str = "obf",
    information_rates: list[float] | None = None,
) -> GroupSequentialDesign:
    """Return a one-sided group-sequential design with ``looks`` analyses.

    ``information_rates`` defaults to equally spaced looks (k / looks). Expected sample sizes
    and the inflation factor are multiples of the fixed-design sample size for the same alpha
    and power.
    """
    problems: list[Problem] = []
    _checks.positive_int("looks", looks, problems)
    _checks.probability("alpha", alpha, problems)
    _checks.probability("beta", beta, problems)
    if kind not in BOUNDARY_TYPES:
        problems.append(Problem("type", f"must be one of {', '.join(BOUNDARY_TYPES)}, got {kind}"))
    if not problems and alpha >= 0.5:
        problems.append(Problem("alpha", f"a one-sided alpha must be below 0.5, got {alpha}"))
    if not problems and 1 - beta <= alpha:
        problems.append(Problem("beta", "power 1 - beta must exceed alpha"))
    if not problems and looks > 20:
        problems.append(Problem("looks", f"at most 20 looks are supported, got {looks}"))
    if information_rates is None and not problems:
        information_rates = [(k + 1) / looks for k in range(looks)]
    if information_rates is not None and not problems:
        rates = information_rates
        if len(rates) != looks:
            problems.append(Problem("information_rates", f"needs {looks} values"))
        elif any(b <= a for a, b in zip([0.0, *rates], rates, strict=False)) or rates[-1] != 1:
            problems.append(Problem("information_rates", "must increase strictly and end at 1"))
    _checks.raise_if(problems, "group-sequential design")
    assert information_rates is not None
    t = np.asarray(information_rates, dtype=float)

    bounds = critical_values(str(kind), alpha, t)
    alpha_exits = _exit_probabilities(t, bounds, 0.0)
    target_power = 1 - beta

    def power_gap(theta: float) -> float:
        return float(_exit_probabilities(t, bounds, theta).sum() - target_power)

    drift = optimize.brentq(power_gap, 0.0, 20.0, xtol=_XTOL)
    fixed = stats.norm.ppf(1 - alpha) + stats.norm.ppf(1 - beta)
    inflation = float((drift / fixed) ** 2)
    exits_h1 = _exit_probabilities(t, bounds, drift)
    exits_h01 = _exit_probabilities(t, bounds, drift / 2)
    return GroupSequentialDesign(
        kind=str(kind),
        alpha=alpha,
        beta=beta,
        information_rates=[float(x) for x in t],
        critical_values=[float(b) for b in bounds],
        stage_levels=[float(x) for x in _upper_tail(bounds)],
        alpha_spent=[float(x) for x in np.cumsum(alpha_exits)],
        drift=float(drift),
        inflation_factor=inflation,
        rejection_probabilities_h1=[float(x) for x in exits_h1],
        power_cumulative=[float(x) for x in np.cumsum(exits_h1)],
        expected_n_h0=_expected_n(t, alpha_exits, inflation),
        expected_n_h01=_expected_n(t, exits_h01, inflation),
        expected_n_h1=_expected_n(t, exits_h1, inflation),
    )
