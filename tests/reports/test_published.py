"""The report reproduces the published results when fed cohorts with the published counts.

References (R 4.x, stats package, output kept here; the tests do not need R):

    > binom.test(30, 32)$conf.int             # NCT02794688: CR 30/32
    [1] 0.7919305701 0.9923392637
    > binom.test(30, 32, p = 0.63)$p.value
    [1] 0.0001375662189
    > prop.test(c(59, 62), c(69, 71), correct = FALSE)$conf.int   # NCT03724903, ITT
    [1] -0.13169339633  0.09535945062

The published NI trial reports a difference of −1.8% (95% CI −13.2 to 9.5).
"""

from __future__ import annotations

import pytest

from ductal.reports.build import analyse
from tests.outcomes.test_dataset import _cr, _Study, _visit


def _cohort(protocol_id: str, arms: dict[str, tuple[int, int]]) -> _Study:
    study = _Study(protocol_id)
    for arm, (responders, n) in arms.items():
        for i in range(n):
            visits = [_visit(30), _cr(180)] if i < responders else [_visit(30), _visit(360)]
            study.add(f"{arm}-{i:03d}", arm=arm, visits=visits)
    return study


def test_observational_cr_30_of_32() -> None:
    data = _cohort("lavage-observational", {"lavage": (30, 32)}).derive()
    results = analyse(data).results["cr_rate"]
    exact = results["itt:lavage"]["exact"]
    assert (exact.events, exact.n) == (30, 32)
    assert exact.estimate == pytest.approx(0.9375)
    assert (exact.lower, exact.upper) == pytest.approx((0.7919305701, 0.9923392637), abs=1e-9)
    test = results["test:steroid_cr:lavage:0.63"]
    assert test.p_value == pytest.approx(0.0001375662189, rel=1e-6)


def test_non_inferiority_trial_published_itt() -> None:
    data = _cohort("lavage-vs-steroid-ni", {"lavage": (59, 69), "steroid": (62, 71)}).derive()
    wald = analyse(data).results["comparison"]["itt:wald"]
    assert wald.estimate == pytest.approx(59 / 69 - 62 / 71)
    assert round(100 * wald.estimate, 1) == -1.8
    assert (wald.lower, wald.upper) == pytest.approx((-0.13169339633, 0.09535945062), abs=1e-9)
    assert wald.non_inferior is True  # the lower bound −13.2% lies above the −15% margin
