"""Posterior probabilities against adaptive quadrature (scipy.integrate.quad), tolerance 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from ductal.design.posterior import (
    monte_carlo,
    prob_above,
    prob_best,
    prob_best_counts,
    prob_difference_above,
)

CASES = [
    pytest.param([3, 5, 8], [10, 10, 10], id="small"),
    pytest.param([28, 30, 29], [30, 30, 30], id="near-one"),
    pytest.param([0, 0, 1], [40, 35, 40], id="near-zero"),
    pytest.param([12, 40, 70, 75], [30, 60, 90, 90], id="four-arms-unequal-n"),
    pytest.param([118, 119], [120, 120], id="two-arms-extreme"),
    pytest.param([1, 0], [1, 1], id="one-patient"),
]


def _quad_best(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = len(a)
    out = []
    for i in range(k):

        def f(t: float, i: int = i) -> float:
            others = [stats.beta.cdf(t, a[j], b[j]) for j in range(k) if j != i]
            return float(stats.beta.pdf(t, a[i], b[i]) * np.prod(others))

        mode = a[i] / (a[i] + b[i])
        out.append(integrate.quad(f, 0, 1, points=[mode], limit=400, epsabs=1e-13)[0])
    return np.array(out)


@pytest.mark.parametrize(("x", "n"), CASES)
def test_prob_best_matches_quadrature(x: list[int], n: list[int]) -> None:
    xs, ns = np.array(x), np.array(n)
    a0 = np.array([1.0, 0.5, 2.0, 1.0][: len(x)])
    b0 = np.array([1.0, 0.5, 1.0, 3.0][: len(x)])
    ref = _quad_best(a0 + xs, b0 + ns - xs)
    active = np.ones((1, len(x)), dtype=bool)
    direct = prob_best((a0 + xs)[None], (b0 + ns - xs)[None], active)[0]
    cached = prob_best_counts(a0, b0, xs[None], ns[None], active)[0]
    assert direct == pytest.approx(ref, abs=1e-5)
    assert cached == pytest.approx(ref, abs=1e-5)
    assert direct.sum() == pytest.approx(1.0, abs=1e-12)


def test_inactive_arms_do_not_compete() -> None:
    a = np.array([[5.0, 9.0, 3.0]])
    b = np.array([[6.0, 2.0, 8.0]])
    got = prob_best(a, b, np.array([[True, False, True]]))[0]
    two = _quad_best(a[0, [0, 2]], b[0, [0, 2]])
    assert got[1] == 0.0
    assert got[[0, 2]] == pytest.approx(two, abs=1e-6)


def test_prob_above_is_the_beta_tail() -> None:
    a, b = np.array([3.0, 30.5]), np.array([9.0, 2.5])
    assert prob_above(a, b, 0.6) == pytest.approx(stats.beta.sf(0.6, a, b), rel=1e-12)


@pytest.mark.parametrize("delta", [-0.15, 0.0, 0.1])
def test_prob_difference_matches_quadrature(delta: float) -> None:
    a1, b1, a2, b2 = 57.0, 8.0, 55.0, 10.0

    def f(q: float) -> float:
        return float(stats.beta.pdf(q, a2, b2) * stats.beta.sf(q + delta, a1, b1))

    ref = integrate.quad(f, 0, 1, points=[0.85], limit=400, epsabs=1e-13)[0]
    got = prob_difference_above(
        np.array([a1]), np.array([b1]), np.array([a2]), np.array([b2]), delta
    )
    assert got[0] == pytest.approx(ref, abs=1e-5)


def test_monte_carlo_agrees_within_its_error() -> None:
    a = np.array([[12.0, 15.0, 18.0]])
    b = np.array([[20.0, 17.0, 14.0]])
    active = np.ones((1, 3), dtype=bool)
    draws = 200_000
    above, best = monte_carlo(a, b, active, 0.5, draws, np.random.default_rng(7))
    exact = prob_best(a, b, active)[0]
    se = np.sqrt(exact * (1 - exact) / draws)
    assert np.all(np.abs(best[0] - exact) < 5 * se)
    assert above is not None
    tail = stats.beta.sf(0.5, a[0], b[0])
    assert np.all(np.abs(above[0] - tail) < 5 * np.sqrt(tail * (1 - tail) / draws) + 1e-12)
