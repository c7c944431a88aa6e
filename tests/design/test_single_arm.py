"""Single-arm exact binomial designs, checked by exact rational arithmetic (fractions)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest

from ductal.design.single_arm import single_arm
from ductal.errors import ValidationError


def _tail(n: int, r: int, p: Fraction) -> Fraction:
    """P(X > r) for X ~ Bin(n, p), exactly."""
    return sum((comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(r + 1, n + 1)), Fraction(0))


def _smallest_exact(
    p0: Fraction, p1: Fraction, alpha: Fraction, power: Fraction
) -> tuple[int, int]:
    n = 0
    while True:
        n += 1
        r = next(r for r in range(n + 1) if _tail(n, r, p0) <= alpha)
        if _tail(n, r, p1) >= power:
            return n, r


@pytest.mark.parametrize(
    ("p0", "p1", "alpha", "power"),
    [
        pytest.param("0.7", "0.9", "0.05", "0.8", id="lavage-pilot"),
        pytest.param("0.05", "0.25", "0.05", "0.8", id="low-rates"),
        pytest.param("0.2", "0.4", "0.1", "0.9", id="moderate"),
    ],
)
def test_smallest_design_matches_exact_rational_search(
    p0: str, p1: str, alpha: str, power: str
) -> None:
    n, r = _smallest_exact(Fraction(p0), Fraction(p1), Fraction(alpha), Fraction(power))
    got = single_arm(float(p0), float(p1), float(alpha), float(power))
    assert (got.design.n, got.design.r) == (n, r)
    assert got.design.critical == r + 1
    assert got.design.alpha == pytest.approx(float(_tail(n, r, Fraction(p0))), abs=1e-12)
    assert got.design.power == pytest.approx(float(_tail(n, r, Fraction(p1))), abs=1e-12)


def test_feasible_list_shows_the_saw_tooth() -> None:
    got = single_arm(0.7, 0.9, 0.05, 0.8, nmax=45)
    ns = [d.n for d in got.feasible]
    assert ns[0] == got.design.n
    # exact power is not monotone: some n above the smallest feasible one fails
    gaps = sorted(set(range(ns[0], 46)) - set(ns))
    assert gaps, "expected at least one infeasible n above the smallest feasible n"
    assert got.n_stable is not None and got.n_stable > max(gaps)
    for d in got.feasible:
        assert d.alpha <= 0.05 + 1e-12 and d.power >= 0.8 - 1e-12


def test_json_keys() -> None:
    out = single_arm(0.7, 0.9).to_dict()
    assert {"n", "r", "alpha", "power"} <= out.keys()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"p0": 0.0, "p1": 0.9}, "p0", id="p0-zero"),
        pytest.param({"p0": 0.7, "p1": 1.2}, "p1", id="p1-above-one"),
        pytest.param({"p0": 0.9, "p1": 0.7}, "p1", id="p1-below-p0"),
        pytest.param({"p0": 0.7, "p1": 0.9, "alpha": 1.0}, "alpha", id="alpha-one"),
        pytest.param({"p0": 0.7, "p1": 0.9, "nmax": 10}, "nmax", id="nmax-too-small"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        single_arm(**kwargs)  # type: ignore[arg-type]
    assert [p.field for p in err.value.problems] == [field]
