"""One proportion against R's binom.test / prop.test and the published lavage study."""

from __future__ import annotations

from typing import Any

import pytest

from ductal.errors import ValidationError
from ductal.stats.proportions import binomial_test, proportion
from tests.stats.reference import assert_close, reference

CASES = reference()["proportions"]


def _id(case: dict[str, Any]) -> str:
    return f"{int(case['x'])}of{int(case['n'])}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_clopper_pearson_matches_binom_test(case: dict[str, Any]) -> None:
    r = proportion(int(case["x"]), int(case["n"]))
    assert_close([r.lower, r.upper], [case["cp_lower"], case["cp_upper"]], atol=1e-12)
    r90 = proportion(int(case["x"]), int(case["n"]), conf_level=0.9)
    assert_close([r90.lower, r90.upper], [case["cp90_lower"], case["cp90_upper"]], atol=1e-12)
    assert r.method == "Clopper-Pearson exact"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_wilson_matches_prop_test(case: dict[str, Any]) -> None:
    x, n = int(case["x"]), int(case["n"])
    r = proportion(x, n, method="wilson")
    assert_close([r.lower, r.upper], [case["wilson_lower"], case["wilson_upper"]], atol=1e-12)
    if case["wilson_cc_valid"]:
        cc = proportion(x, n, method="wilson-cc")
        assert_close(
            [cc.lower, cc.upper], [case["wilson_cc_lower"], case["wilson_cc_upper"]], atol=1e-12
        )


@pytest.mark.parametrize("case", CASES, ids=_id)
@pytest.mark.parametrize(
    ("alternative", "key"),
    [("two-sided", "p_two_sided"), ("greater", "p_greater"), ("less", "p_less")],
)
def test_exact_binomial_test_matches_r(case: dict[str, Any], alternative: Any, key: str) -> None:
    p = binomial_test(int(case["x"]), int(case["n"]), case["p0"], alternative)
    assert_close(p, case[key])


def test_published_lavage_result_30_of_32() -> None:
    # Published: CR 30/32 (93.8%), exact 95% CI 79.2-99.2%.
    r = proportion(30, 32, benchmark=0.63, alternative="greater")
    assert round(r.estimate * 100, 1) == 93.8
    assert (round(r.lower * 100, 1), round(r.upper * 100, 1)) == (79.2, 99.2)
    assert r.p_value is not None and r.p_value < 0.001
    assert r.summary.loc[0, "method"] == "Clopper-Pearson exact"


def test_to_dict_has_stable_keys_and_null_for_missing() -> None:
    d = proportion(3, 10).to_dict()
    assert {"estimate", "lower", "upper", "method", "p_value"} <= d.keys()
    assert d["p_value"] is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"events": 5, "n": 0}, "n", id="n-zero"),
        pytest.param({"events": 11, "n": 10}, "events", id="events-exceed-n"),
        pytest.param({"events": -1, "n": 10}, "events", id="negative"),
        pytest.param({"events": 2.5, "n": 10}, "events", id="fractional"),
        pytest.param({"events": 2, "n": 10, "benchmark": 1.2}, "benchmark", id="benchmark"),
        pytest.param({"events": 2, "n": 10, "method": "agresti"}, "method", id="method"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        proportion(**kwargs)
    assert err.value.problems[0].field == field
