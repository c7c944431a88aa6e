"""Group-sequential boundaries against rpact::getDesignGroupSequential/getDesignCharacteristics.

Fixture: tests/design/fixtures/rpact_boundaries.json from tests/design/r/design_reference.R
(rpact 3.3.4). Tolerances: 1e-6 absolute on critical values, stage levels, cumulative alpha,
rejection probabilities and expected sample sizes; 1e-6 relative on the inflation factor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ductal.design.boundaries import group_sequential
from ductal.errors import ValidationError

FIXTURE = Path(__file__).parent / "fixtures" / "rpact_boundaries.json"
TYPES = {"OF": "obf", "P": "pocock", "asOF": "asOF", "asP": "asP"}


def _cases() -> list[Any]:
    designs = json.loads(FIXTURE.read_text())["designs"]
    return [
        pytest.param(d, id=f"{d['type']}-k{d['looks']}-a{d['alpha']}-b{d['beta']}") for d in designs
    ]


@pytest.mark.parametrize("ref", _cases())
def test_matches_rpact(ref: dict[str, Any]) -> None:
    got = group_sequential(ref["looks"], ref["alpha"], ref["beta"], TYPES[ref["type"]])
    assert got.critical_values == pytest.approx(ref["criticalValues"], abs=1e-6)
    assert got.stage_levels == pytest.approx(ref["stageLevels"], abs=1e-6)
    assert got.alpha_spent == pytest.approx(ref["alphaSpent"], abs=1e-6)
    assert got.inflation_factor == pytest.approx(ref["inflationFactor"], rel=1e-6)
    assert got.drift == pytest.approx(ref["shift"] ** 0.5, rel=1e-6)
    assert got.rejection_probabilities_h1 == pytest.approx(ref["rejectionProbabilities"], abs=1e-6)
    assert got.expected_n_h0 == pytest.approx(ref["averageSampleNumber0"], abs=1e-6)
    assert got.expected_n_h01 == pytest.approx(ref["averageSampleNumber01"], abs=1e-6)
    assert got.expected_n_h1 == pytest.approx(ref["averageSampleNumber1"], abs=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"looks": 0}, "looks", id="no-looks"),
        pytest.param({"looks": 3, "alpha": 1.2}, "alpha", id="alpha"),
        pytest.param({"looks": 3, "kind": "haybittle"}, "type", id="type"),
        pytest.param(
            {"looks": 3, "information_rates": [0.5, 0.4, 1.0]}, "information_rates", id="rates"
        ),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        group_sequential(**kwargs)
    assert [p.field for p in err.value.problems] == [field]
