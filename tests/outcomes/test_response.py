"""Response classification: each rule on a small hand-made assessment with a known answer."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ductal.outcomes.response import (
    baseline_signs,
    best_response,
    classify,
    classify_series,
    lesion_size,
)
from ductal.protocols.loader import builtin_protocol
from ductal.protocols.model import ResponseCriteria

CRITERIA = ResponseCriteria()
BASELINE = {"us_size_1_mm": 40.0, "us_size_2_mm": 30.0, "us_size_3_mm": 20.0}


def _visit(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "mass": 1,
        "erythema": 0,
        "abscess": 0,
        "fistula": 0,
        "ulcer": 0,
        "skin_involvement": 0,
        "new_abscess": 0,
        "new_fistula": 0,
        "scar_only": 0,
        "us_done": 1,
        "us_size_1_mm": 30.0,
        "us_size_2_mm": 20.0,
        "us_size_3_mm": 10.0,
        "treatment_escalated": 0,
    }
    data.update(overrides)
    return data


def _call(data: dict[str, Any], criteria: ResponseCriteria = CRITERIA, signs: int = 2) -> Any:
    return classify(
        data,
        criteria=criteria,
        baseline_size=lesion_size(BASELINE, criteria),
        baseline_sign_count=signs,
    )


@pytest.mark.parametrize(
    ("overrides", "overall", "rule", "clinical", "radiological"),
    [
        pytest.param(
            {"mass": 0, "us_size_1_mm": 0.0, "us_size_2_mm": 0.0, "us_size_3_mm": 0.0},
            "CR",
            "cr",
            "CR",
            "CR",
            id="cr-no-sign-no-lesion",
        ),
        pytest.param(
            {"mass": 0, "scar_only": 1, "us_done": 0},
            "CR",
            "cr_scar_only",
            "CR",
            "CR",
            id="cr-scar-only",
        ),
        pytest.param(
            {"mass": 0, "us_done": 0}, "CR", "cr_no_ultrasound", "CR", "NE", id="cr-no-ultrasound"
        ),
        pytest.param(
            {"mass": 0, "us_size_1_mm": 25.0}, "SD", "sd", "CR", "SD", id="sd-no-sign-residual"
        ),
        pytest.param({"us_size_1_mm": 20.0}, "PR", "pr_reduction", "PR", "PR", id="pr-exactly-50"),
        pytest.param({"us_size_1_mm": 20.5}, "SD", "sd", "PR", "SD", id="sd-just-under-50"),
        pytest.param(
            {"us_size_1_mm": 10.0, "new_abscess": 1},
            "PD",
            "pd_new_lesion",
            "PD",
            "PR",
            id="pd-new-abscess-beats-pr",
        ),
        pytest.param({"new_fistula": 1}, "PD", "pd_new_lesion", "PD", "SD", id="pd-new-fistula"),
        pytest.param(
            {"treatment_escalated": 1}, "PD", "pd_escalation", "PD", "SD", id="pd-escalation"
        ),
        pytest.param({"us_size_1_mm": 48.0}, "PD", "pd_growth", "PR", "PD", id="pd-growth-20"),
        pytest.param({"us_size_1_mm": 47.9}, "SD", "sd", "PR", "SD", id="sd-growth-under-20"),
        pytest.param(
            {"mass": 1, "erythema": 1, "us_done": 0},
            "SD",
            "sd_not_measurable",
            "SD",
            "NE",
            id="sd-not-measurable",
        ),
    ],
)
def test_rules(
    overrides: dict[str, Any], overall: str, rule: str, clinical: str, radiological: str
) -> None:
    result = _call(_visit(**overrides))
    assert (result.overall, result.rule) == (overall, rule)
    assert result.clinical == clinical
    assert result.radiological == radiological


def test_sum_measure_changes_the_call() -> None:
    # largest: 20/40 = 50% smaller (PR); sum: (20+20+10)/(40+30+20) = 55.6% of baseline (SD)
    visit = _visit(us_size_1_mm=20.0, us_size_2_mm=20.0, us_size_3_mm=10.0)
    assert _call(visit).overall == "PR"
    summed = ResponseCriteria(measure="sum")
    result = _call(visit, summed)
    assert result.overall == "SD"
    assert result.size_mm == pytest.approx(50.0)
    assert result.change == pytest.approx(50 / 90 - 1)


def test_thresholds_come_from_the_protocol() -> None:
    strict = ResponseCriteria(partial_reduction=0.7, progression_growth=0.1)
    assert _call(_visit(us_size_1_mm=20.0), strict).overall == "SD"
    assert _call(_visit(us_size_1_mm=44.0), strict).rule == "pd_growth"


def test_scar_only_may_be_switched_off() -> None:
    visit = _visit(mass=0, scar_only=1, us_size_1_mm=5.0, us_size_2_mm=4.0, us_size_3_mm=2.0)
    assert _call(visit).rule == "cr_scar_only"
    no_scar = ResponseCriteria(scar_only_counts_as_complete=False)
    assert _call(visit, no_scar).rule == "pr_reduction"  # 5 mm left of 40: 87.5% smaller


def test_growth_from_nadir() -> None:
    nadir = ResponseCriteria(growth_reference="nadir")
    small = {"us_size_2_mm": 5.0, "us_size_3_mm": 3.0}
    visits = [_visit(us_size_1_mm=10.0, **small), _visit(us_size_1_mm=13.0, **small)]
    by_baseline = classify_series(visits, criteria=CRITERIA, baseline=BASELINE)
    by_nadir = classify_series(visits, criteria=nadir, baseline=BASELINE)
    assert [c.overall for c in by_baseline] == ["PR", "PR"]
    assert [c.overall for c in by_nadir] == ["PR", "PD"]  # 13 mm is 30% above the 10 mm nadir


def test_lesion_size_and_baseline_signs() -> None:
    assert lesion_size(BASELINE, CRITERIA) == 40.0
    assert lesion_size(BASELINE, ResponseCriteria(measure="sum")) == 90.0
    assert math.isnan(lesion_size({"us_done": 0, "us_size_1_mm": 4.0}, CRITERIA))
    assert math.isnan(lesion_size({}, CRITERIA))
    assert lesion_size({"us_size_1_mm": 7.0, "us_size_2_mm": None}, CRITERIA) == 7.0
    assert baseline_signs({"presentation": ["mass", "skin", "pain"]}, CRITERIA) == 4
    assert baseline_signs({"mass": 1, "abscess": 1, "fistula": 0}, CRITERIA) == 2


def test_no_baseline_size_is_not_evaluable_radiologically() -> None:
    result = classify(_visit(), criteria=CRITERIA, baseline_size=math.nan, baseline_sign_count=1)
    assert result.radiological == "NE"
    assert result.overall == "SD"


def test_best_response() -> None:
    assert best_response(["SD", "PD", "PR"]) == "PR"
    assert best_response(["PD", "CR"]) == "CR"
    assert best_response([]) is None


def test_builtin_protocols_state_the_defaults() -> None:
    for key in ("lavage-observational", "lavage-vs-steroid-ni", "refractory-igm-adaptive"):
        r = builtin_protocol(key).response
        assert (r.partial_reduction, r.progression_growth, r.measure) == (0.5, 0.2, "largest")
        assert r.scar_only_counts_as_complete
