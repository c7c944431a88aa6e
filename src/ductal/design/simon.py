"""Simon's two-stage designs (Simon 1989): optimal, minimax and the admissible designs between.

Stage 1 treats ``n1`` patients and stops for futility when at most ``r1`` respond; otherwise
``n - n1`` more are treated and the treatment is declared ineffective when at most ``r`` of all
``n`` respond. Every (n1, n, r1) with n <= ``nmax`` is searched exhaustively, with the most
powerful ``r`` whose type I error does not exceed alpha. The optimal design minimises the
expected sample size under p0 (EN0), the minimax design minimises n (then EN0), and the
admissible designs (Jung, Lee, Kim & George 2004) minimise q*n + (1-q)*EN0 for some q in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from ductal.design import _checks
from ductal.errors import Problem, ValidationError

_TOL = 1e-12


@dataclass(frozen=True)
class TwoStage:
    """One two-stage design with its operating characteristics under p0 and p1."""

    r1: int
    n1: int
    r: int
    n: int
    en0: float
    pet0: float
    alpha: float
    power: float


@dataclass(frozen=True)
class Admissible:
    """An admissible design and the range of weights q on n for which it is best."""

    design: TwoStage
    q_low: float
    q_high: float


@dataclass(frozen=True)
class SimonResult:
    """Optimal, minimax and admissible two-stage designs for one set of constraints."""

    p0: float
    p1: float
    alpha_target: float
    beta_target: float
    nmax: int
    optimal: TwoStage
    minimax: TwoStage
    admissible: list[Admissible]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with ``optimal``, ``minimax`` and ``admissible``."""
        return {
            "p0": self.p0,
            "p1": self.p1,
            "alpha_target": self.alpha_target,
            "beta_target": self.beta_target,
            "nmax": self.nmax,
            "optimal": asdict(self.optimal),
            "minimax": asdict(self.minimax),
            "admissible": [
                {**asdict(a.design), "q_low": a.q_low, "q_high": a.q_high} for a in self.admissible
            ],
            "method": "exhaustive search (Simon 1989); admissible designs after Jung et al. 2004",
        }


def _survival_table(nmax: int, p: float) -> np.ndarray:
    """Return S[m, k + nmax] = P(Bin(m, p) > k) for m in 0..nmax and k in -nmax..nmax."""
    m = np.arange(nmax + 1)[:, None]
    k = np.arange(-nmax, nmax + 1)[None, :]
    return np.asarray(stats.binom.sf(k, m, p), dtype=float)


def _feasible(p0: float, p1: float, alpha: float, beta: float, nmax: int) -> np.ndarray:
    """Return every feasible design as rows (n1, n, r1, r, en0, pet0, alpha, power)."""
    s0, s1 = _survival_table(nmax, p0), _survival_table(nmax, p1)
    rows: list[np.ndarray] = []
    target = 1 - beta - _TOL
    # power <= P(Bin(nmax, p1) > r), so no feasible design has r above r_top
    r_top = int(np.nonzero(stats.binom.sf(np.arange(nmax), nmax, p1) >= target)[0].max(initial=0))
    r_all = np.arange(r_top + 2)
    width = s1.shape[1]
    s1_flat = s1.ravel()
    for n1 in range(1, nmax):
        n_two = nmax - n1
        n2 = np.arange(1, n_two + 1)
        x_desc = np.arange(n1, -1, -1)
        # size[n2, j, r] = P(X1 >= n1 - j, X1 + X2 > r) under p0, by a running sum over x1
        # from the top, so that size[:, n1 - 1 - r1, r] = P(X1 > r1, X1 + X2 > r)
        k_index = r_all[None, :] - x_desc[:, None] + nmax
        size = s0[1 : n_two + 1][:, k_index]
        size *= stats.binom.pmf(x_desc, n1, p0)[None, :, None]
        np.cumsum(size, axis=1, out=size)
        size_r1 = size[:, n1 - 1 :: -1, :] if n1 > 1 else size[:, :1, :]
        r1 = np.arange(n1)
        r_min = np.maximum(np.count_nonzero(size_r1 > alpha + _TOL, axis=2), r1[None, :])
        valid = (r_min <= (n1 + n2)[:, None] - 1) & (r_min <= r_top)
        r_idx = np.minimum(r_min, r_top)
        # power <= P(X1 > r1) and <= P(X1 + X2 > r): screen with both before summing
        pass1 = stats.binom.sf(r1, n1, p1)
        bound2 = s1[(n1 + n2)[:, None], r_idx + nmax]
        cand = valid & (pass1[None, :] >= target) & (bound2 >= target)
        if not cand.any():
            continue
        i2, i1 = np.nonzero(cand)
        r_c = r_idx[i2, i1]
        # power at the chosen r: sum over x1 > r1 of pmf1(x1) P(X2 > r - x1)
        x1 = np.arange(n1 + 1)
        flat = (n2[i2] * width)[:, None] + r_c[:, None] - x1[None, :] + nmax
        terms = np.take(s1_flat, flat) * stats.binom.pmf(x1, n1, p1)[None, :]
        power = np.where(x1[None, :] > i1[:, None], terms, 0.0).sum(axis=1)
        ok = power >= target
        if not ok.any():
            continue
        i2, i1, r_c, power = i2[ok], i1[ok], r_c[ok], power[ok]
        pet0 = stats.binom.cdf(i1, n1, p0)
        n2_sel = n2[i2]
        alpha_at = np.take_along_axis(size_r1[i2, i1], r_c[:, None], axis=1)[:, 0]
        rows.append(
            np.column_stack(
                [
                    np.full(i1.size, n1),
                    n1 + n2_sel,
                    i1,
                    r_min[i2, i1],
                    n1 + (1 - pet0) * n2_sel,
                    pet0,
                    alpha_at,
                    power,
                ]
            )
        )
    if not rows:
        return np.empty((0, 8))
    return np.vstack(rows)


def _design(row: np.ndarray) -> TwoStage:
    return TwoStage(
        r1=int(row[2]),
        n1=int(row[0]),
        r=int(row[3]),
        n=int(row[1]),
        en0=float(row[4]),
        pet0=float(row[5]),
        alpha=float(row[6]),
        power=float(row[7]),
    )


def _best_per_n(rows: np.ndarray) -> dict[int, np.ndarray]:
    """Return, for each maximum size n, the design with the smallest EN0 (ties: smaller n1)."""
    order = np.lexsort((rows[:, 2], rows[:, 0], np.round(rows[:, 4], 9), rows[:, 1]))
    ranked = rows[order]
    _, first = np.unique(ranked[:, 1], return_index=True)
    return {int(row[1]): row for row in ranked[first]}


def _admissible(best: dict[int, np.ndarray], n_lo: int, n_hi: int) -> list[Admissible]:
    """Return the designs on the lower convex hull of (n, EN0) between minimax and optimal."""
    points = [best[n] for n in sorted(best) if n_lo <= n <= n_hi]
    hull: list[np.ndarray] = []
    for pt in points:  # monotone-chain lower hull, x = n, y = EN0
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = (hull[-2][1], hull[-2][4]), (hull[-1][1], hull[-1][4])
            if (x2 - x1) * (pt[4] - y1) - (y2 - y1) * (pt[1] - x1) <= 1e-12:
                hull.pop()
            else:
                break
        hull.append(pt)
    # keep the decreasing part of the hull (larger n must buy a smaller EN0)
    kept = [hull[0]]
    for pt in hull[1:]:
        if pt[4] < kept[-1][4] - 1e-12:
            kept.append(pt)
    out: list[Admissible] = []
    for i, pt in enumerate(kept):
        # design i is best for q between the slopes to its neighbours: q n + (1-q) EN0
        def q_between(a: np.ndarray, b: np.ndarray) -> float:
            slope = (b[4] - a[4]) / (b[1] - a[1])  # negative
            return float(-slope / (1 - slope))

        q_high = 1.0 if i == 0 else q_between(kept[i - 1], pt)
        q_low = 0.0 if i == len(kept) - 1 else q_between(pt, kept[i + 1])
        out.append(Admissible(design=_design(pt), q_low=q_low, q_high=q_high))
    return out


def simon(
    p0: float, p1: float, alpha: float = 0.05, beta: float = 0.2, *, nmax: int = 100
) -> SimonResult:
    """Return Simon's optimal and minimax two-stage designs and the admissible ones between.

    alpha is the one-sided type I error at p0, beta the type II error at p1. A ValidationError
    names ``nmax`` when no design with at most ``nmax`` patients meets the constraints.
    """
    _checks.error_rates(p0, p1, alpha, beta, what="Simon two-stage design", power_field="beta")
    problems: list[Problem] = []
    _checks.positive_int("nmax", nmax, problems)
    if not problems and nmax < 2:
        problems.append(Problem("nmax", "a two-stage design needs nmax of at least 2"))
    _checks.raise_if(problems, "Simon two-stage design")

    rows = _feasible(p0, p1, alpha, beta, nmax)
    if rows.shape[0] == 0:
        raise ValidationError(
            "no two-stage design meets the constraints",
            problems=[Problem("nmax", f"no design with n <= {nmax} has these error rates")],
        )
    best = _best_per_n(rows)
    n_minimax = min(best)
    minimax = best[n_minimax]
    optimal = min(best.values(), key=lambda row: (round(float(row[4]), 9), row[1], row[0]))
    return SimonResult(
        p0=p0,
        p1=p1,
        alpha_target=alpha,
        beta_target=beta,
        nmax=nmax,
        optimal=_design(optimal),
        minimax=_design(minimax),
        admissible=_admissible(best, n_minimax, int(optimal[1])),
    )
