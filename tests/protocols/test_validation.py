"""Form data validation and eligibility."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductal.errors import Problem
from ductal.protocols.loader import builtin_protocol
from ductal.protocols.model import Choice, EligibilityRule, FieldDef, FormDef, Protocol, Rule, Text
from ductal.protocols.validation import (
    EligibilityResult,
    coerce_value,
    eligibility,
    validate_form_data,
    visible_fields,
)

TODAY = date(2025, 6, 1)


def _field(key: str, type_: str, **kw: Any) -> FieldDef:
    if type_ in ("choice", "multi_choice") and "choices" not in kw:
        kw["choices"] = [Choice(code=c, label=Text(en=c)) for c in ("a", "b", "c")]
    return FieldDef(key=key, type=type_, label=Text(en=key), **kw)  # type: ignore[arg-type]


def _form(*fields: FieldDef, rules: list[Rule] | None = None) -> FormDef:
    return FormDef(key="f", title=Text(en="F"), fields=list(fields), rules=rules or [])


def _messages(problems: list[Problem]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in problems:
        out.setdefault(p.field, []).append(p.message)
    return out


def _one(definition: FieldDef, value: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    clean, problems = validate_form_data(_form(definition), {definition.key: value}, today=TODAY)
    return clean, _messages(problems)


# ------------------------------------------------------------------------------ storage types


@pytest.mark.parametrize(
    ("type_", "kw", "value", "stored"),
    [
        pytest.param("text", {}, "  hello ", "hello", id="text-trimmed"),
        pytest.param("text", {}, 12, "12", id="text-from-number"),
        pytest.param("integer", {}, "42", 42, id="integer-from-text"),
        pytest.param("integer", {}, 42.0, 42, id="integer-from-whole-float"),
        pytest.param("integer", {}, " -3 ", -3, id="integer-negative"),
        pytest.param("number", {}, "2.5", 2.5, id="number-from-text"),
        pytest.param("number", {}, 3, 3.0, id="number-from-int"),
        pytest.param("number", {"decimals": 1}, 21.4567, 21.5, id="number-rounded"),
        pytest.param("date", {}, "2024-02-29", "2024-02-29", id="date-text"),
        pytest.param("date", {}, date(2024, 1, 2), "2024-01-02", id="date-object"),
        pytest.param(
            "datetime", {}, "2024-05-01T09:30:00Z", "2024-05-01T09:30:00Z", id="datetime-z"
        ),
        pytest.param(
            "datetime",
            {},
            "2024-05-01T17:30:00+08:00",
            "2024-05-01T09:30:00Z",
            id="datetime-converted-to-utc",
        ),
        pytest.param(
            "datetime",
            {},
            datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=-5))),
            "2024-05-01T14:30:00Z",
            id="datetime-object",
        ),
        pytest.param("datetime", {}, "2024-05-01 09:30", "2024-05-01T09:30:00Z", id="naive-is-utc"),
        pytest.param("choice", {}, "b", "b", id="choice"),
        pytest.param("multi_choice", {}, ["c", "a", "c"], ["a", "c"], id="multi-sorted-unique"),
        pytest.param("multi_choice", {}, "b,a", ["a", "b"], id="multi-from-text"),
        pytest.param("multi_choice", {}, {"a": 1, "b": 0}, ["a"], id="multi-from-grid"),
        pytest.param("yes_no", {}, True, 1, id="yes-no-true"),
        pytest.param("yes_no", {}, False, 0, id="yes-no-false"),
        pytest.param("yes_no", {}, "1", 1, id="yes-no-one"),
        pytest.param("yes_no", {}, 0, 0, id="yes-no-zero"),
        pytest.param("yes_no", {}, "Yes", 1, id="yes-no-yes"),
        pytest.param("yes_no", {}, "no", 0, id="yes-no-no"),
        pytest.param("file", {}, "sha256:abc", "sha256:abc", id="file"),
    ],
)
def test_values_are_stored_in_their_type(
    type_: str, kw: dict[str, Any], value: Any, stored: Any
) -> None:
    clean, problems = _one(_field("x", type_, **kw), value)
    assert problems == {}
    assert clean == {"x": stored}
    assert type(clean["x"]) is type(stored)


@pytest.mark.parametrize(
    ("type_", "kw", "value", "message"),
    [
        pytest.param("integer", {}, "abc", "must be a whole number", id="integer-text"),
        pytest.param("integer", {}, 2.5, "must be a whole number", id="integer-fraction"),
        pytest.param("integer", {}, True, "must be a whole number", id="integer-bool"),
        pytest.param("number", {}, "1,5", "must be a number", id="number-comma"),
        pytest.param("number", {}, "nan", "must be a number", id="number-nan"),
        pytest.param("date", {}, "01/02/2024", "must be a date (YYYY-MM-DD)", id="date-format"),
        pytest.param("date", {}, "2023-02-29", "is not a real date", id="date-impossible"),
        pytest.param("datetime", {}, "2024-05-01", "must be a date and time", id="datetime-day"),
        pytest.param("choice", {}, "x", "'x' is not one of: a, b, c", id="choice-unknown"),
        pytest.param("multi_choice", {}, ["a", "x"], "'x' is not one of: a, b, c", id="multi"),
        pytest.param("yes_no", {}, "maybe", "must be yes (1) or no (0)", id="yes-no"),
        pytest.param("yes_no", {}, 2, "must be yes (1) or no (0)", id="yes-no-two"),
        pytest.param("text", {}, ["a"], "must be text", id="text-list"),
        pytest.param("text", {"max_length": 3}, "abcd", "must be at most 3 characters", id="long"),
        pytest.param("integer", {"max": 120}, 121, "must be at most 120", id="max"),
        pytest.param("number", {"min": 0.5}, 0.25, "must be at least 0.5", id="min"),
        pytest.param("file", {}, 5, "must be a file reference", id="file"),
    ],
)
def test_bad_values_are_reported(type_: str, kw: dict[str, Any], value: Any, message: str) -> None:
    _, problems = _one(_field("x", type_, **kw), value)
    assert len(problems["x"]) == 1
    assert problems["x"][0].startswith(message)


def test_range_bounds_are_inclusive() -> None:
    definition = _field("age", "integer", min=16, max=70)
    assert _one(definition, 16)[1] == {}
    assert _one(definition, 70)[1] == {}
    assert _one(definition, 15)[1] == {"age": ["must be at least 16"]}


def test_out_of_range_value_is_kept_in_cleaned_data() -> None:
    clean, problems = _one(_field("age", "integer", max=70), 80)
    assert clean == {"age": 80}
    assert problems == {"age": ["must be at most 70"]}


def test_coerce_value_raises_value_error() -> None:
    assert coerce_value(_field("n", "integer"), "7") == 7
    with pytest.raises(ValueError, match="whole number"):
        coerce_value(_field("n", "integer"), "7.5")


def test_unknown_field_is_reported_and_dropped() -> None:
    clean, problems = validate_form_data(_form(_field("a", "text")), {"a": "x", "zz": 1})
    assert clean == {"a": "x"}
    assert problems == [Problem("zz", "is not a field of form 'f'")]


def test_all_problems_are_reported_at_once() -> None:
    form = _form(
        _field("a", "integer", required=True),
        _field("b", "integer"),
        _field("c", "choice"),
        _field("d", "date", required=True),
    )
    _, problems = validate_form_data(form, {"b": "x", "c": "q"}, today=TODAY)
    assert _messages(problems) == {
        "a": ["is required"],
        "b": ["must be a whole number"],
        "c": ["'q' is not one of: a, b, c"],
        "d": ["is required"],
    }


# ------------------------------------------------------------------------------ branching


def _branching_form() -> FormDef:
    return _form(
        _field(
            "culture", "choice", choices=[Choice(code=c, label=Text(en=c)) for c in ("neg", "pos")]
        ),
        _field("organism", "text", required=True, show_if="[culture] = 'pos'"),
        _field("strain", "text", required=True, show_if="not isblank([organism])"),
    )


def test_required_only_when_shown() -> None:
    form = _branching_form()
    clean, problems = validate_form_data(form, {"culture": "neg"})
    assert (clean, problems) == ({"culture": "neg"}, [])
    _, problems = validate_form_data(form, {"culture": "pos"})
    assert _messages(problems) == {"organism": ["is required"]}


def test_value_of_hidden_field_is_dropped_not_an_error() -> None:
    form = _branching_form()
    clean, problems = validate_form_data(form, {"culture": "neg", "organism": "x", "strain": "y"})
    assert clean == {"culture": "neg"}  # hiding organism hides strain too
    assert problems == []
    assert visible_fields(form, {"culture": "neg", "organism": "x"}) == {"culture"}


def test_checkbox_branching() -> None:
    form = _form(
        _field("signs", "multi_choice"),
        _field("b_detail", "text", required=True, show_if="[signs(b)] = '1'"),
    )
    assert _messages(validate_form_data(form, {"signs": ["a", "b"]})[1]) == {
        "b_detail": ["is required"]
    }
    assert validate_form_data(form, {"signs": ["a"]})[1] == []


# ------------------------------------------------------------------------------ calc


def test_calc_is_computed_and_input_ignored() -> None:
    form = builtin_protocol("lavage-observational").form("baseline")
    data = {"assessment_date": "2025-01-01", "side": "left", "infection_evidence": 0}
    clean, problems = validate_form_data(
        form, {**data, "height_cm": "160", "weight_kg": 64, "bmi": 99}, today=TODAY
    )
    assert problems == []
    assert clean["bmi"] == 25.0  # 64 / 1.6**2, 1 decimal
    clean, _ = validate_form_data(form, {**data, "weight_kg": 64}, today=TODAY)
    assert "bmi" not in clean  # blank height: blank result


def test_calc_chain_and_range() -> None:
    form = _form(
        _field("total", "calc", calc="[double] + 1", max=10),
        _field("double", "calc", calc="[n] * 2"),
        _field("n", "integer"),
    )
    clean, problems = validate_form_data(form, {"n": 6})
    assert clean == {"n": 6, "double": 12.0, "total": 13.0}
    assert _messages(problems) == {"total": ["must be at most 10"]}


# ------------------------------------------------------------------------------ rules


def test_rule_reported_on_each_named_field() -> None:
    rule = Rule(
        key="order",
        expr="[stop] >= [start]",
        when="not isblank([stop])",
        message=Text(en="Stop is before start", zh="停止早于开始"),
        fields=["start", "stop"],
    )
    form = _form(_field("start", "date"), _field("stop", "date"), rules=[rule])
    data = {"start": "2025-01-10", "stop": "2025-01-09"}
    _, problems = validate_form_data(form, data, today=TODAY)
    assert _messages(problems) == {
        "start": ["Stop is before start"],
        "stop": ["Stop is before start"],
    }
    _, problems = validate_form_data(form, data, today=TODAY, lang="zh")
    assert problems[0].message == "停止早于开始"
    assert validate_form_data(form, {"start": "2025-01-10"}, today=TODAY)[1] == []  # when false
    assert validate_form_data(form, {**data, "stop": "2025-01-10"}, today=TODAY)[1] == []


def test_rule_skipped_when_its_field_is_already_wrong() -> None:
    rule = Rule(key="r", expr="[n] > 1", message=Text(en="too small"), fields=["n"])
    form = _form(_field("n", "integer"), rules=[rule])
    assert _messages(validate_form_data(form, {"n": "x"})[1]) == {"n": ["must be a whole number"]}
    assert _messages(validate_form_data(form, {"n": 0})[1]) == {"n": ["too small"]}


@pytest.mark.parametrize(
    ("protocol_id", "form_key", "data", "field", "fragment"),
    [
        pytest.param(
            "lavage-observational",
            "baseline",
            {
                "assessment_date": "2025-01-01",
                "side": "left",
                "culture": "positive",
                "organism": "staphylococcus",
                "infection_evidence": 0,
            },
            "infection_evidence",
            "Infection evidence must be yes",
            id="culture-infection",
        ),
        pytest.param(
            "lavage-vs-steroid-ni",
            "screening",
            {"severity_score": 7, "severity_group": "mild"},
            "severity_group",
            "does not match the severity score",
            id="severity-group",
        ),
        pytest.param(
            "lavage-vs-steroid-ni",
            "treatment_course",
            {"start_date": "2025-01-10", "regimen": "prednisolone", "stop_date": "2025-01-01"},
            "stop_date",
            "Stop date is before the start date",
            id="stop-after-start",
        ),
        pytest.param(
            "lavage-observational",
            "follow_up",
            {
                "assessment_date": "2025-02-01",
                "mass": 0,
                "erythema": 0,
                "abscess": 1,
                "fistula": 0,
                "ulcer": 0,
                "skin_involvement": 0,
                "us_done": 0,
                "investigator_response": "cr",
            },
            "investigator_response",
            "cannot have an abscess or fistula",
            id="cr-without-abscess",
        ),
        pytest.param(
            "lavage-observational",
            "adverse_event",
            {
                "term": "pain",
                "onset_date": "2025-02-01",
                "resolved_date": "2025-01-01",
                "ctcae_grade": 1,
                "serious": 0,
                "relatedness": "possible",
            },
            "resolved_date",
            "before the onset date",
            id="ae-resolution",
        ),
        pytest.param(
            "lavage-observational",
            "end_of_study",
            {"end_date": "2025-02-01", "reason": "completed", "last_contact_date": "2025-03-01"},
            "last_contact_date",
            "after the end date",
            id="last-contact",
        ),
        pytest.param(
            "lavage-observational",
            "screening",
            {"screening_date": "2025-03-01", "consent_signed": 1, "consent_date": "2025-01-01"},
            "consent_date",
            "more than 30 days before screening",
            id="consent-date",
        ),
    ],
)
def test_builtin_rules(
    protocol_id: str, form_key: str, data: dict[str, Any], field: str, fragment: str
) -> None:
    form = builtin_protocol(protocol_id).form(form_key)
    _, problems = validate_form_data(form, data, today=TODAY)
    assert any(p.field == field and fragment in p.message for p in problems), problems


def test_builtin_rules_pass_on_consistent_data() -> None:
    form = builtin_protocol("lavage-vs-steroid-ni").form("screening")
    data = {
        "screening_date": "2025-01-05",
        "age": 30,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2025-01-05",
        "severity_score": 6,
        "severity_group": "severe",
    }
    assert validate_form_data(form, data, today=TODAY)[1] == []


# ------------------------------------------------------------------------------ dates


def test_dates_before_birth_and_in_the_future() -> None:
    form = _form(
        _field("seen", "date"),
        _field("at", "datetime"),
        _field("next_due", "date"),
        _field("surgery_planned", "date"),
    )
    data = {
        "seen": "1980-01-01",
        "at": "2026-01-01T00:00:00Z",
        "next_due": "2026-01-01",
        "surgery_planned": "2026-02-01",
    }
    _, problems = validate_form_data(
        form, data, context={"date_of_birth": "1990-05-05"}, today=TODAY
    )
    assert _messages(problems) == {
        "seen": ["is before the date of birth"],
        "at": ["is in the future"],
    }
    assert validate_form_data(form, {"seen": str(TODAY)}, today=TODAY)[1] == []


def test_today_defaults_to_the_current_date() -> None:
    form = _form(_field("seen", "date"))
    tomorrow = date.today() + timedelta(days=1)
    assert _messages(validate_form_data(form, {"seen": tomorrow})[1]) == {
        "seen": ["is in the future"]
    }
    assert validate_form_data(form, {"seen": datetime.now(UTC).date()})[1] == []


def test_context_is_visible_but_shadowed_by_form_fields() -> None:
    form = _form(
        _field("visit", "date"),
        _field(
            "why_early",
            "text",
            required=True,
            show_if="datediff([enrolment_date], [visit], 'd') < 7",
        ),
    )
    context = {"enrolment_date": "2025-01-01"}
    problems = validate_form_data(form, {"visit": "2025-01-03"}, context=context, today=TODAY)[1]
    assert _messages(problems) == {"why_early": ["is required"]}
    assert validate_form_data(form, {"visit": "2025-02-03"}, context=context, today=TODAY)[1] == []
    shadow = _form(_field("x", "integer"), _field("y", "text", required=True, show_if="[x] = 1"))
    assert validate_form_data(shadow, {"x": 2}, context={"x": 1})[1] == []


# ------------------------------------------------------------------------------ eligibility

SCREEN_OK = {
    "screening_date": "2025-01-05",
    "age": 30,
    "sex": "female",
    "non_lactating_6m": "yes",
    "pathology_confirmed": 1,
    "diagnosis": "igm",
    "carcinoma_excluded": 1,
    "consent_signed": 1,
    "consent_date": "2025-01-05",
}


@pytest.mark.parametrize(
    ("protocol_id", "extra"),
    [
        pytest.param("lavage-observational", {}, id="observational"),
        pytest.param(
            "lavage-vs-steroid-ni", {"severity_score": 3, "severity_group": "mild"}, id="ni"
        ),
        pytest.param("refractory-igm-adaptive", {"refractory_or_recurrent": 1}, id="adaptive"),
    ],
)
def test_eligible_subject(protocol_id: str, extra: dict[str, Any]) -> None:
    result = eligibility(builtin_protocol(protocol_id), {**SCREEN_OK, **extra}, today=TODAY)
    assert result == EligibilityResult(eligible=True, failed=[], missing=[])


@pytest.mark.parametrize(
    ("protocol_id", "change", "failed_key"),
    [
        pytest.param("lavage-observational", {"age": 17}, "adult", id="minor"),
        pytest.param("lavage-observational", {"sex": "male"}, "female", id="male"),
        pytest.param("lavage-observational", {"non_lactating_6m": 0}, "non_lactating", id="lact"),
        pytest.param("lavage-observational", {"carcinoma_excluded": "no"}, "no_carcinoma", id="ca"),
        pytest.param("lavage-observational", {"consent_signed": 0}, "consent", id="no-consent"),
        pytest.param(
            "lavage-vs-steroid-ni",
            {"diagnosis": "pd", "severity_score": 1, "severity_group": "mild"},
            "diagnosis",
            id="pd-ni",
        ),
        pytest.param(
            "refractory-igm-adaptive",
            {"refractory_or_recurrent": 0},
            "refractory",
            id="not-refractory",
        ),
    ],
)
def test_ineligible_subject(protocol_id: str, change: dict[str, Any], failed_key: str) -> None:
    protocol = builtin_protocol(protocol_id)
    base = {
        **SCREEN_OK,
        "severity_score": 3,
        "severity_group": "mild",
        "refractory_or_recurrent": 1,
    }
    data = {
        k: v
        for k, v in {**base, **change}.items()
        if k in {f.key for f in protocol.form("screening").fields}
    }
    result = eligibility(protocol, data, today=TODAY)
    assert not result.eligible
    assert [key for key, _ in result.failed] == [failed_key]
    assert result.failed[0][1].endswith(": not met")


def test_pd_is_eligible_for_the_observational_study_only() -> None:
    data = {**SCREEN_OK, "diagnosis": "pd"}
    assert eligibility(builtin_protocol("lavage-observational"), data).eligible


def test_missing_answer_makes_subject_not_yet_eligible() -> None:
    data = {k: v for k, v in SCREEN_OK.items() if k != "age"}
    result = eligibility(builtin_protocol("lavage-observational"), data, today=TODAY)
    assert not result.eligible
    assert result.missing == ["age"]
    assert result.failed == [("adult", "Aged 18 years or over: no answer yet for [age]")]


def test_hidden_answer_is_not_missing() -> None:
    data = {**SCREEN_OK, "pathology_confirmed": 0}  # hides diagnosis, whose answer is dropped
    result = eligibility(builtin_protocol("lavage-observational"), data, today=TODAY)
    assert result.missing == []
    assert [k for k, _ in result.failed] == ["pathology", "diagnosis"]


def test_exclusion_rule() -> None:
    base = builtin_protocol("lavage-observational")
    exclusion = EligibilityRule(
        key="too_old",
        kind="exclusion",
        expr="[age] > 60",
        message=Text(en="Over 60", zh="超过60岁"),
    )
    protocol = Protocol.model_validate(
        {
            **base.model_dump(),
            "eligibility": [*base.model_dump()["eligibility"], exclusion.model_dump()],
        }
    )
    assert eligibility(protocol, SCREEN_OK, today=TODAY).eligible
    result = eligibility(protocol, {**SCREEN_OK, "age": 65}, today=TODAY, lang="zh")
    assert result.failed == [("too_old", "超过60岁: applies")]


# ------------------------------------------------------------------------------ properties

_FORM = _form(
    _field("t", "text", max_length=5),
    _field("i", "integer", min=0, max=100, required=True),
    _field("n", "number", decimals=2),
    _field("d", "date"),
    _field("dt", "datetime"),
    _field("c", "choice", show_if="[i] > 10"),
    _field("m", "multi_choice"),
    _field("y", "yes_no"),
    _field("k", "calc", calc="[n] / [i]", decimals=3),
    _field("f", "file"),
    rules=[Rule(key="r", expr="[y] = 1", when="[c] = 'a'", message=Text(en="no"), fields=["y"])],
)
_STORED = {
    "t": str,
    "i": int,
    "n": float,
    "d": str,
    "dt": str,
    "c": str,
    "m": list,
    "y": int,
    "k": float,
    "f": str,
}
_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["1", "0", "yes", "a", "b,c", "2024-02-29", "2024-05-01T10:00Z", "12"]),
    st.dates(),
    st.datetimes(),
    st.lists(st.sampled_from(["a", "b", "x", 1]), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*_STORED, "junk"]), _anything, max_size=10))
def test_validation_never_raises_and_stores_declared_types(data: dict[str, Any]) -> None:
    clean, problems = validate_form_data(_FORM, data, context={"date_of_birth": "1990-01-01"})
    for key, value in clean.items():
        assert isinstance(value, _STORED[key]) and not isinstance(value, bool), (key, value)
    for problem in problems:
        assert problem.field in _STORED or problem.field in data
    if "junk" in data:
        assert Problem("junk", "is not a field of form 'f'") in problems
    # cleaning is idempotent: cleaned data validates to itself
    again, _ = validate_form_data(_FORM, clean, context={"date_of_birth": "1990-01-01"})
    assert again == clean
