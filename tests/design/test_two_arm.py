"""Two-proportion sample sizes.

* ``wald``: the unpooled normal-approximation formula (Chow, Shao & Wang 2008, 4.2-4.3), checked
  against a hand calculation with printed normal quantiles, and the NI trial's planning figure:
  90% vs 90%, margin 15 points, one-sided alpha 0.025, power 0.8, 10% dropout -> 140 patients.
* ``farrington-manning``: against ``rpact::getSampleSizeRates`` (fixture made by
  tests/design/r/design_reference.R), tolerance 1e-8 relative on the unrounded n.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ductal.design.two_arm import two_arm
from ductal.errors import ValidationError

FIXTURES = Path(__file__).parent / "fixtures"


def test_ni_trial_planning_figure() -> None:
    got = two_arm(0.9, 0.9, margin=0.15, alpha=0.025, power=0.8, dropout=0.1)
    # (1.959964 + 0.841621)^2 * (0.09 + 0.09) / 0.15^2 = 62.79 -> 63 evaluable per arm
    assert got.n_exact == pytest.approx((1.959964 + 0.841621) ** 2 * 0.18 / 0.0225, rel=1e-6)
    assert got.n_evaluable_per_arm == 63
    assert got.n_per_arm == 70
    assert got.n_total == 140
    assert got.to_dict()["n_total"] == 140


def test_power_90_needs_more() -> None:
    got = two_arm(0.9, 0.9, margin=0.15, alpha=0.025, power=0.9, dropout=0.1)
    assert got.n_exact == pytest.approx((1.959964 + 1.281552) ** 2 * 0.18 / 0.0225, rel=1e-6)
    assert (got.n_evaluable_per_arm, got.n_total) == (85, 190)


def test_superiority_textbook() -> None:
    got = two_arm(0.6, 0.4, alpha=0.025, power=0.9)
    want = (1.959964 + 1.281552) ** 2 * (0.24 + 0.24) / 0.2**2
    assert got.n_exact == pytest.approx(want, rel=1e-6)
    assert got.hypothesis == "superiority"


def _rpact_cases() -> list[Any]:
    data = json.loads((FIXTURES / "rpact_sample_size_rates.json").read_text())
    return [pytest.param(c, id=f"{c['pi1']}-{c['pi2']}-m{c['margin']}") for c in data["cases"]]


@pytest.mark.parametrize("case", _rpact_cases())
def test_farrington_manning_matches_rpact(case: dict[str, float]) -> None:
    got = two_arm(
        case["pi1"],
        case["pi2"],
        margin=case["margin"],
        alpha=case["alpha"],
        power=case["power"],
        method="farrington-manning",
    )
    assert got.n_exact == pytest.approx(case["nFixed1"], rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"p1": 1.0, "p2": 0.9}, "p1", id="p1-one"),
        pytest.param(
            {"p1": 0.9, "p2": 0.9, "margin": 0.15, "dropout": 1.0}, "dropout", id="dropout"
        ),
        pytest.param({"p1": 0.9, "p2": 0.9, "margin": 0.15, "alpha": 1.0}, "alpha", id="alpha"),
        pytest.param({"p1": 0.7, "p2": 0.9, "margin": 0.1}, "margin", id="h1-inside-h0"),
        pytest.param({"p1": 0.8, "p2": 0.9}, "p1", id="superiority-wrong-way"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        two_arm(**kwargs)  # type: ignore[arg-type]
    assert [p.field for p in err.value.problems] == [field]
