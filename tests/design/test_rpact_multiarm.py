"""Agreement with rpact::getSimulationMultiArmRates on designs both can express.

Three treatment arms and a control, 20 patients per arm at the interim and 20 more per remaining
arm at the final analysis, no early stopping; at the interim rpact keeps the 1 ('best') or 2
('rBest') treatment arms with the largest effect estimate, which at equal n is the largest
responder count (rpact adds uniform noise of 1e-5 to the estimates, so ties are broken at
random); ductal's ``keep_best`` rule keeps the arms with the highest posterior mean (the same
order) and breaks ties at random. Fixture:
tests/design/fixtures/rpact_multiarm.json from tests/design/r/multiarm_reference.R (rpact 3.3.4,
10,000 iterations per case). The probability each arm is kept must agree within 4 combined
Monte Carlo standard errors; the expected number of subjects exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ductal.design.runner import simulate
from ductal.design.spec import parse_design

FIXTURE = Path(__file__).parent / "fixtures" / "rpact_multiarm.json"


def _cases() -> list[Any]:
    cases = json.loads(FIXTURE.read_text())["cases"]
    return [pytest.param(c, id=f"{c['selection']}-{c['scenario']}") for c in cases]


@pytest.mark.parametrize("ref", _cases())
def test_selection_matches_rpact(ref: dict[str, Any]) -> None:
    keep = int(ref["keep"])
    treatments = ref["treatments"]
    design = parse_design(
        {
            "name": "rpact-equivalent",
            "arms": [{"id": "T1"}, {"id": "T2"}, {"id": "T3"}, {"id": "C", "control": True}],
            "looks": [80, 80 + 20 * (keep + 1)],
            "rules": {"keep_best": {"arms": keep}},
            "scenarios": [
                {
                    "name": ref["scenario"],
                    "rates": {
                        "T1": treatments[0],
                        "T2": treatments[1],
                        "T3": treatments[2],
                        "C": ref["control"],
                    },
                }
            ],
        }
    )
    trials = 40_000
    sc = simulate(design, trials=trials, seed=17)["scenarios"][0]
    assert ref["futilityStop"] == 0
    assert sc["expected_n_total"] == pytest.approx(ref["expectedNumberOfSubjects"], abs=1e-9)
    for arm, want in zip(sc["arms"][:3], ref["selectedStage2"], strict=True):
        got = 1 - arm["p_dropped"]
        se = math.sqrt(want * (1 - want) / ref["iterations"] + got * (1 - got) / trials)
        assert abs(got - want) < 4 * se, (arm["arm"], got, want)
