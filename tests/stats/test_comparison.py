"""Two proportions against R (prop.test, log-binomial and logistic GLMs) and Newcombe (1998)."""

from __future__ import annotations

from typing import Any

import pytest

from ductal.errors import ValidationError
from ductal.stats.comparison import compare_proportions
from tests.stats.reference import assert_close, reference

CASES = reference()["two_proportions"]


def _id(c: dict[str, Any]) -> str:
    return f"{int(c['x1'])}of{int(c['n1'])}-vs-{int(c['x2'])}of{int(c['n2'])}"


def _counts(c: dict[str, Any]) -> tuple[int, int, int, int]:
    return int(c["x1"]), int(c["n1"]), int(c["x2"]), int(c["n2"])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_difference_intervals_match_r(case: dict[str, Any]) -> None:
    wald = compare_proportions(*_counts(case))
    assert_close(wald.estimate, case["diff"], atol=1e-12)
    assert_close([wald.lower, wald.upper], [case["wald_lower"], case["wald_upper"]], atol=1e-12)
    assert_close(wald.p_value, case["chisq_p"])
    newc = compare_proportions(*_counts(case), method="newcombe")
    assert_close(
        [newc.lower, newc.upper], [case["newcombe_lower"], case["newcombe_upper"]], atol=1e-12
    )


@pytest.mark.parametrize("case", [c for c in CASES if "rr" in c], ids=_id)
def test_ratios_match_glm(case: dict[str, Any]) -> None:
    r = compare_proportions(*_counts(case))
    assert_close(
        [r.risk_ratio, r.risk_ratio_lower, r.risk_ratio_upper],
        [case["rr"], case["rr_lower"], case["rr_upper"]],
    )
    assert_close(
        [r.odds_ratio, r.odds_ratio_lower, r.odds_ratio_upper],
        [case["or"], case["or_lower"], case["or_upper"]],
    )


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_non_inferiority_p_value(case: dict[str, Any]) -> None:
    r = compare_proportions(*_counts(case), margin=case["ni_margin"])
    assert_close(r.p_value, case["ni_p_value"])
    assert r.non_inferior == (r.lower > case["ni_margin"])


# Newcombe (1998) Stat Med 17:873, Table II, method 10 (hybrid score, no continuity correction).
NEWCOMBE_TABLE = [
    ((56, 70, 48, 80), (0.0524, 0.3339)),
    ((9, 10, 3, 10), (0.1705, 0.8090)),
    ((6, 7, 2, 7), (0.0582, 0.8062)),
    ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ((0, 10, 0, 20), (-0.1611, 0.2775)),
    ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ((10, 10, 0, 20), (0.6791, 1.0000)),
    ((10, 10, 0, 10), (0.6075, 1.0000)),
]


@pytest.mark.parametrize(("counts", "published"), NEWCOMBE_TABLE)
def test_newcombe_published_table(
    counts: tuple[int, int, int, int], published: tuple[float, float]
) -> None:
    r = compare_proportions(*counts, method="newcombe")
    assert (round(r.lower, 4), round(r.upper, 4)) == published


def test_published_non_inferiority_trial() -> None:
    # Lavage 59/69 (85.5%) vs steroid 62/71 (87.3%): -1.8% (95% CI -13.2 to 9.5), margin -15 pp.
    r = compare_proportions(59, 69, 62, 71, margin=-0.15)
    assert (round(r.proportion1 * 100, 1), round(r.proportion2 * 100, 1)) == (85.5, 87.3)
    assert round(r.estimate * 100, 1) == -1.8
    assert (round(r.lower * 100, 1), round(r.upper * 100, 1)) == (-13.2, 9.5)
    assert r.non_inferior is True
    assert r.p_value < 0.025


def test_zero_cells_give_missing_ratios_not_a_crash() -> None:
    r = compare_proportions(0, 10, 0, 12)
    assert r.estimate == 0
    d = r.to_dict()
    assert d["risk_ratio"] is None and d["odds_ratio_lower"] is None
    assert r.summary.shape == (3, 5)


def test_events_above_n_is_rejected() -> None:
    with pytest.raises(ValidationError) as err:
        compare_proportions(12, 10, 3, 10)
    assert err.value.problems[0].field == "events1"
