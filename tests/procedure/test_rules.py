"""Procedure rules in the built-in protocols: well formed, and each rule on hand-made cases."""

from __future__ import annotations

from typing import Any

import pytest

from ductal.errors import ProtocolError
from ductal.procedure.checks import evaluate_checks
from ductal.procedure.regimen import evaluate_regimen
from ductal.procedure.rules import check_definitions, procedure_settings, render_message
from ductal.protocols.loader import builtin_protocol
from ductal.protocols.validation import validate_form_data

from .conftest import checks, procedure

LAVAGE = ("lavage-observational", "lavage-vs-steroid-ni")


@pytest.mark.parametrize("protocol_id", LAVAGE)
def test_builtin_procedure_rules_are_well_formed(protocol_id: str) -> None:
    protocol = builtin_protocol(protocol_id)
    assert check_definitions(protocol) == []
    settings = procedure_settings(protocol)
    assert [(s.field, s.required) for s in settings.steps] == [
        ("step_cleanse_at", True),
        ("step_massage_at", True),
        ("step_scope_at", True),
        ("step_prime_at", True),
        ("step_dilate_at", False),
        ("step_introduce_at", True),
        ("step_distend_at", False),
        ("step_advance_at", True),
    ]
    assert settings.pathology.due_days == 7
    assert settings.course is not None and [s.code for s in settings.course.steps] == [
        "infusion",
        "massage",
    ]


def test_protocol_without_procedure_rules_is_refused() -> None:
    with pytest.raises(ProtocolError, match="defines no procedure"):
        procedure_settings(builtin_protocol("refractory-igm-adaptive"))


def _check_keys(**answers: Any) -> dict[str, str]:
    protocol = builtin_protocol("lavage-observational")
    clean, problems = validate_form_data(protocol.form("pre_session_checks"), checks(**answers))
    assert problems == []
    found = evaluate_checks(protocol, clean, context={"pathology_flag": 0})
    return {f.key: f.level for f in found}


def test_clean_checks_raise_nothing() -> None:
    assert _check_keys() == {}


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param(
            {"carcinoma_excluded": 0}, {"carcinoma_not_excluded": "block"}, id="carcinoma"
        ),
        pytest.param(
            {"anticoagulant": 1, "antithrombotic_plan": "paused"},
            {"blood_thinner": "warn"},
            id="anticoagulant",
        ),
        pytest.param(
            {"antiplatelet": 1, "antithrombotic_plan": "continued"},
            {"blood_thinner": "warn"},
            id="antiplatelet",
        ),
        pytest.param(
            {"sedation_planned": 1, "fasting_instructed": 0},
            {"fasting_not_instructed": "block", "sedation_fasting": "advice"},
            id="sedation-no-fasting",
        ),
        pytest.param(
            {"sedation_planned": 1, "fasting_instructed": 1},
            {"sedation_fasting": "advice"},
            id="sedation-fasting",
        ),
        pytest.param(
            {"irrigation_allergy": ["local_anaesthetic"]},
            {"allergy_to_irrigation_agent": "block"},
            id="allergy",
        ),
        pytest.param(
            {"nipple_retracted": 1, "local_anaesthesia_planned": 0},
            {"retracted_nipple_anaesthesia": "advice"},
            id="retracted-no-la",
        ),
        pytest.param({"nipple_retracted": 1}, {}, id="retracted-with-la"),
    ],
)
def test_each_check(answers: dict[str, Any], expected: dict[str, str]) -> None:
    assert _check_keys(**answers) == expected


DISCHARGE = {"discharge_present": 1, "discharge_persistent": 0, "discharge_single_duct": 0}


@pytest.mark.parametrize(
    ("answers", "pathological"),
    [
        pytest.param({"discharge_spontaneous": 1, "discharge_colour": "bloody"}, 1, id="bloody"),
        pytest.param({"discharge_spontaneous": 1, "discharge_colour": "clear"}, 1, id="clear"),
        pytest.param({"discharge_spontaneous": 1, "discharge_colour": "milky"}, 0, id="milky"),
        pytest.param(
            {"discharge_spontaneous": 1, "discharge_colour": "milky", "discharge_single_duct": 1},
            1,
            id="single-duct",
        ),
        pytest.param(
            {"discharge_spontaneous": 1, "discharge_colour": "coloured", "discharge_persistent": 1},
            1,
            id="persistent",
        ),
        pytest.param({"discharge_spontaneous": 0, "discharge_colour": "bloody"}, 0, id="expressed"),
    ],
)
def test_discharge_triage(answers: dict[str, Any], pathological: int) -> None:
    protocol = builtin_protocol("lavage-observational")
    data = checks(**{**DISCHARGE, **answers})
    clean, problems = validate_form_data(protocol.form("pre_session_checks"), data)
    assert problems == []
    assert clean["pathological_discharge"] == pathological
    keys = _check_keys(**{**DISCHARGE, **answers})
    assert ("pathological_discharge" in keys) == bool(pathological)


def test_pathology_flag_blocks() -> None:
    protocol = builtin_protocol("lavage-observational")
    clean, _ = validate_form_data(protocol.form("pre_session_checks"), checks())
    found = evaluate_checks(protocol, clean, context={"pathology_flag": 1})
    assert [(f.key, f.level) for f in found] == [("pathology_flagged", "block")]


def test_none_with_an_allergy_is_a_problem() -> None:
    protocol = builtin_protocol("lavage-observational")
    _, problems = validate_form_data(
        protocol.form("pre_session_checks"), checks(irrigation_allergy=["none", "antibiotic"])
    )
    assert [p.field for p in problems] == ["irrigation_allergy"]


def _regimen(
    form: str = "ductoscopy_procedure", baseline: Any = None, **answers: Any
) -> dict[str, str]:
    protocol = builtin_protocol("lavage-observational")
    data = procedure(**answers) if form == "ductoscopy_procedure" else answers
    clean, problems = validate_form_data(protocol.form(form), data)
    assert problems == []
    found = evaluate_regimen(protocol, form, clean, baseline=baseline or {})
    return {f.key: f.message for f in found}


def test_regimen_clean_case() -> None:
    assert _regimen() == {}


@pytest.mark.parametrize(
    ("baseline", "answers", "expected"),
    [
        pytest.param({"culture": "positive"}, {}, {"antibiotic_expected"}, id="culture-no-abx"),
        pytest.param({"infection_evidence": 1}, {}, {"antibiotic_expected"}, id="evidence-no-abx"),
        pytest.param({}, {"purulent_aspirate": 1}, {"antibiotic_expected"}, id="pus-today-no-abx"),
        pytest.param(
            {"culture": "positive"},
            {"antibiotic_added": 1, "antibiotic_agent": "gentamicin"},
            set(),
            id="culture-with-abx",
        ),
        pytest.param(
            {},
            {"antibiotic_added": 1, "antibiotic_agent": "gentamicin"},
            {"antibiotic_without_evidence"},
            id="abx-without-evidence",
        ),
        pytest.param(
            {"culture": "positive"},
            {"culture": "negative", "antibiotic_added": 1, "antibiotic_agent": "gentamicin"},
            {"antibiotic_without_evidence"},
            id="later-negative-culture-wins",
        ),
    ],
)
def test_antibiotic_rules(
    baseline: dict[str, Any], answers: dict[str, Any], expected: set[str]
) -> None:
    assert set(_regimen(baseline=baseline, **answers)) == expected


@pytest.mark.parametrize(
    ("agent", "dose", "flagged"),
    [
        pytest.param("dexamethasone", 1, False, id="dex-at-min"),
        pytest.param("dexamethasone", 10, False, id="dex-at-max"),
        pytest.param("dexamethasone", 0.5, True, id="dex-below"),
        pytest.param("dexamethasone", 12, True, id="dex-above"),
        pytest.param("triamcinolone", 12, False, id="tri-in-range"),
        pytest.param("triamcinolone", 40, False, id="tri-at-max"),
        pytest.param("triamcinolone", 4, True, id="tri-below"),
        pytest.param("other", 30, False, id="no-range-for-other"),
    ],
)
def test_steroid_dose_range(agent: str, dose: float, flagged: bool) -> None:
    found = _regimen(steroid_agent=agent, steroid_dose_mg=dose)
    assert ("steroid_dose_out_of_range" in found) == flagged
    if flagged:
        assert f"{dose:g} mg is outside the protocol range" in found["steroid_dose_out_of_range"]


def test_duration_limit_from_the_protocol() -> None:
    assert "duration_over_limit" not in _regimen(end_time="2026-01-29T09:12:00Z")
    found = _regimen(end_time="2026-01-29T09:12:30Z")
    assert found["duration_over_limit"] == (
        "The procedure took 12.5 min, longer than the 12 min advised for comfort"
    )


def test_suspicious_lesion_without_sample() -> None:
    lesion = {
        "finding": "lesion",
        "lesion_type": "suspicious",
        "inflammation_features": None,
    }
    assert "suspicious_lesion" in _regimen(**lesion)
    assert "suspicious_lesion" not in _regimen(**lesion, biopsy_taken=1)


def test_lavage_session_rules() -> None:
    infusion = {
        "session_date": "2026-01-29",
        "session_number": 1,
        "procedure": "infusion",
        "steroid_agent": "dexamethasone",
        "steroid_dose_mg": 5,
        "antibiotic_added": 0,
    }
    assert set(_regimen("lavage_session", {"culture": "positive"}, **infusion)) == {
        "antibiotic_expected"
    }
    massage = {"session_date": "2026-01-30", "session_number": 2, "procedure": "massage"}
    assert _regimen("lavage_session", {"culture": "positive"}, **massage) == {}


def test_render_message() -> None:
    env = {"a": 1.0, "b": ["x", "y"], "c": None}
    assert render_message("{a} / {b} / {c} / {d}", env) == "1 / x, y / – / {d}"
    assert render_message("broken {", env) == "broken {"
