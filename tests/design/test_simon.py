"""Simon two-stage designs against Simon (1989), Controlled Clinical Trials 10:1-10, Table 1.

Rows checked (p0, p1, alpha, beta -> optimal r1/n1, r/n and minimax r1/n1, r/n), with EN0 and
PET0 as printed to one and two decimals. The EN0/PET0 values were also recomputed exactly here
(binomial sums) and agree with the printed roundings; the tolerance is half a unit in the last
printed digit plus 1e-9.
"""

from __future__ import annotations

import pytest
from scipy import stats

from ductal.design.simon import TwoStage, simon
from ductal.errors import ValidationError

# (p0, p1, alpha, beta), optimal (r1, n1, r, n, EN0, PET0), minimax (r1, n1, r, n, EN0, PET0)
SIMON_1989 = [
    ((0.05, 0.25, 0.10, 0.10), (0, 9, 2, 24, 14.5, 0.63), (0, 13, 2, 20, 16.4, 0.51)),
    ((0.05, 0.25, 0.05, 0.20), (0, 9, 2, 17, 12.0, 0.63), (0, 12, 2, 16, 13.8, 0.54)),
    ((0.10, 0.30, 0.05, 0.20), (1, 10, 5, 29, 15.0, 0.74), (1, 15, 5, 25, 19.5, 0.55)),
    ((0.10, 0.30, 0.05, 0.10), (2, 18, 6, 35, 22.5, 0.73), (2, 22, 6, 33, 26.2, 0.62)),
    ((0.20, 0.40, 0.05, 0.20), (3, 13, 12, 43, 20.6, 0.75), (4, 18, 10, 33, 22.3, 0.72)),
    ((0.20, 0.40, 0.05, 0.10), (4, 19, 15, 54, 30.4, 0.67), (5, 24, 13, 45, 31.2, 0.66)),
    ((0.70, 0.90, 0.05, 0.20), (4, 6, 22, 27, 14.8, 0.58), (19, 23, 21, 26, 23.2, 0.95)),
]


def _check(got: TwoStage, want: tuple[int, int, int, int, float, float]) -> None:
    r1, n1, r, n, en0, pet0 = want
    assert (got.r1, got.n1, got.r, got.n) == (r1, n1, r, n)
    assert got.en0 == pytest.approx(en0, abs=0.05 + 1e-9)
    assert got.pet0 == pytest.approx(pet0, abs=0.005 + 1e-9)


@pytest.mark.parametrize(
    ("args", "optimal", "minimax"),
    [pytest.param(*row, id="p0={}-p1={}-a={}-b={}".format(*row[0])) for row in SIMON_1989],
)
def test_reproduces_simon_table(
    args: tuple[float, float, float, float],
    optimal: tuple[int, int, int, int, float, float],
    minimax: tuple[int, int, int, int, float, float],
) -> None:
    got = simon(*args, nmax=100)
    _check(got.optimal, optimal)
    _check(got.minimax, minimax)
    _, _, alpha, beta = args
    for design in (got.optimal, got.minimax):
        assert design.alpha <= alpha + 1e-12
        assert design.power >= 1 - beta - 1e-12


def _exact_operating_characteristics(d: TwoStage, p: float) -> tuple[float, float]:
    """Return (P(reject H0), PET) by direct summation over the first-stage count."""
    n2 = d.n - d.n1
    reject = sum(
        stats.binom.pmf(x1, d.n1, p) * stats.binom.sf(d.r - x1, n2, p)
        for x1 in range(d.r1 + 1, d.n1 + 1)
    )
    return float(reject), float(stats.binom.cdf(d.r1, d.n1, p))


def test_admissible_designs_are_between_minimax_and_optimal() -> None:
    got = simon(0.05, 0.25, 0.10, 0.10)
    designs = [a.design for a in got.admissible]
    assert designs[0] == got.minimax
    assert designs[-1] == got.optimal
    ns = [d.n for d in designs]
    assert ns == sorted(ns)
    assert [d.en0 for d in designs] == sorted((d.en0 for d in designs), reverse=True)
    assert got.admissible[0].q_high == 1.0 and got.admissible[-1].q_low == 0.0
    for a in got.admissible:
        size, pet = _exact_operating_characteristics(a.design, 0.05)
        power, _ = _exact_operating_characteristics(a.design, 0.25)
        assert a.design.alpha == pytest.approx(size, abs=1e-12)
        assert a.design.pet0 == pytest.approx(pet, abs=1e-12)
        assert a.design.power == pytest.approx(power, abs=1e-12)


def test_json_keys() -> None:
    out = simon(0.7, 0.9, 0.05, 0.2).to_dict()
    for key in ("optimal", "minimax"):
        assert set(out[key]) == {"r1", "n1", "r", "n", "en0", "pet0", "alpha", "power"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"p0": -0.1, "p1": 0.3}, "p0", id="p0-negative"),
        pytest.param({"p0": 0.3, "p1": 0.3}, "p1", id="p1-equal-p0"),
        pytest.param({"p0": 0.1, "p1": 0.3, "alpha": 1.5}, "alpha", id="alpha-above-one"),
        pytest.param({"p0": 0.1, "p1": 0.3, "nmax": 15}, "nmax", id="nmax-too-small"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        simon(**kwargs)  # type: ignore[arg-type]
    assert [p.field for p in err.value.problems] == [field]
