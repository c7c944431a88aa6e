"""The YAML loader: problems with paths, cross-reference checks, and the built-in protocols."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from ductal.errors import NotFound, Problem, ProtocolError
from ductal.protocols.loader import (
    ENDPOINT_EVENTS,
    builtin_ids,
    builtin_protocol,
    builtin_protocols,
    check_protocol,
    format_path,
    load_protocol,
    parse_protocol,
)
from ductal.protocols.logic import parse
from ductal.protocols.model import Protocol

BUILTIN_IDS = ["lavage-observational", "lavage-vs-steroid-ni", "refractory-igm-adaptive"]


def _minimal() -> dict[str, Any]:
    """Return a small, sound protocol document to break in tests."""
    label = {"en": "x", "zh": "x"}
    return {
        "id": "mini",
        "version": "1",
        "title": {"en": "Mini"},
        "design": "single_arm",
        "target_enrolment": 10,
        "follow_up_days": 365,
        "arms": [{"key": "only", "label": label}],
        "screening_form": "screening",
        "eligibility": [{"key": "adult", "expr": "[age] >= 18", "message": label}],
        "schedule": [
            {"key": "screening", "label": label, "kind": "screening", "forms": ["screening"]},
            {"key": "baseline", "label": label, "kind": "baseline", "forms": ["baseline"]},
            {"key": "month_1", "label": label, "day": 30, "forms": ["follow_up"]},
        ],
        "forms": [
            {
                "key": "screening",
                "title": label,
                "fields": [
                    {"key": "age", "type": "integer", "label": label},
                    {
                        "key": "sex",
                        "type": "choice",
                        "label": label,
                        "choices": [
                            {"code": "female", "label": label},
                            {"code": "male", "label": label},
                        ],
                    },
                ],
            },
            {
                "key": "baseline",
                "title": label,
                "fields": [{"key": "us_size_1_mm", "type": "number", "label": label}],
            },
            {
                "key": "follow_up",
                "title": label,
                "fields": [
                    {"key": "us_size_1_mm", "type": "number", "label": label},
                    {"key": "abscess", "type": "yes_no", "label": label},
                    {
                        "key": "investigator_response",
                        "type": "choice",
                        "label": label,
                        "choices": [{"code": c, "label": label} for c in ("cr", "pr", "sd", "pd")],
                    },
                ],
                "rules": [],
            },
        ],
        "response": {
            "size_fields": ["us_size_1_mm"],
            "clinical_sign_fields": ["abscess"],
            "new_lesion_fields": [],
            "escalation_field": None,
            "scar_field": None,
            "ultrasound_done_field": None,
            "relapse_field": None,
        },
        "endpoints": [
            {
                "key": "time_to_cr",
                "label": label,
                "kind": "time_to_event",
                "event": "complete_response",
                "primary": True,
            },
        ],
    }


def _text(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _problems(doc: dict[str, Any] | str) -> list[Problem]:
    with pytest.raises(ProtocolError) as info:
        parse_protocol(doc if isinstance(doc, str) else _text(doc), source="test.yaml")
    assert info.value.message.startswith("test.yaml")
    return info.value.problems


def test_minimal_document_loads() -> None:
    protocol = parse_protocol(_text(_minimal()))
    assert protocol.id == "mini"
    assert check_protocol(protocol) == []


def test_format_path() -> None:
    assert format_path(("forms", 3, "fields", 7, "choices")) == "forms[3].fields[7].choices"
    assert format_path(()) == "<root>"


# ------------------------------------------------------------------------------ syntax and model


def test_yaml_syntax_error_has_line_and_column() -> None:
    problems = _problems("id: x\nforms: [\n  a: b\n")
    assert len(problems) == 1
    assert problems[0].field == "<document>"
    assert problems[0].message.startswith("line ")
    assert "column" in problems[0].message


def test_duplicate_yaml_key_is_refused() -> None:
    problems = _problems("id: x\nversion: 1\nid: y\n")
    assert problems == [Problem("<document>", "line 3, column 1: duplicate key 'id'")]


def test_document_must_be_a_mapping() -> None:
    assert _problems("- a\n- b\n") == [Problem("<root>", "the document must be a mapping of keys")]


def test_every_model_error_is_listed_with_its_path() -> None:
    doc = _minimal()
    doc["forms"][2]["fields"][0]["colour"] = "red"  # unknown key
    doc["forms"][0]["fields"][1]["choices"] = []  # a choice field without choices
    doc["forms"][0]["fields"][0]["type"] = "whole"  # not a type
    doc["target_enrolment"] = 0
    del doc["version"]
    fields = {p.field: p.message for p in _problems(doc)}
    assert fields["forms[2].fields[0].colour"] == "unknown key"
    assert "needs choices" in fields["forms[0].fields[1]"]
    assert "forms[0].fields[0].type" in fields
    assert "target_enrolment" in fields
    assert fields["version"] == "Field required"
    assert len(fields) == 5


def test_bad_key_pattern() -> None:
    doc = _minimal()
    doc["forms"][0]["fields"][0]["key"] = "Age"
    assert [p.field for p in _problems(doc)] == ["forms[0].fields[0].key"]


# ------------------------------------------------------------------------------ cross-references


def _break(change: Any) -> list[Problem]:
    doc = _minimal()
    change(doc)
    return _problems(doc)


@pytest.mark.parametrize(
    ("change", "path", "fragment"),
    [
        pytest.param(
            lambda d: d["schedule"][2]["forms"].append("visit"),
            "schedule[2].forms[1]",
            "no form 'visit'",
            id="dangling-form",
        ),
        pytest.param(
            lambda d: d.update(screening_form="intake"),
            "screening_form",
            "no form 'intake'",
            id="missing-screening-form",
        ),
        pytest.param(
            lambda d: d["schedule"][0].update(kind="baseline"),
            "screening_form",
            "no event of kind screening",
            id="screening-not-on-screening-event",
        ),
        pytest.param(
            lambda d: d["forms"][0]["fields"][0].update(show_if="[sex] = 'female"),
            "forms[0].fields[0].show_if",
            "position 9: unterminated string",
            id="bad-expression",
        ),
        pytest.param(
            lambda d: d["forms"][0]["fields"][0].update(show_if="[abscess] = 1"),
            "forms[0].fields[0].show_if",
            "unknown field 'abscess' (not on form 'screening')",
            id="field-of-another-form",
        ),
        pytest.param(
            lambda d: d["forms"][0]["fields"][0].update(show_if="[age] > 1"),
            "forms[0].fields[0].show_if",
            "refers to itself",
            id="show-if-self",
        ),
        pytest.param(
            lambda d: d["forms"][0]["fields"][0].update(show_if="[sex(female)] = 1"),
            "forms[0].fields[0].show_if",
            "is not multi_choice",
            id="checkbox-on-single-choice",
        ),
        pytest.param(
            lambda d: d["eligibility"][0].update(expr="[abscess] = 0"),
            "eligibility[0].expr",
            "unknown field 'abscess'",
            id="eligibility-outside-screening",
        ),
        pytest.param(
            lambda d: d["forms"][2]["rules"].append(
                {"key": "r", "expr": "[abscess] = 1", "message": {"en": "m"}, "fields": ["nope"]}
            ),
            "forms[2].rules[0].fields[0]",
            "no field 'nope'",
            id="rule-field",
        ),
        pytest.param(
            lambda d: d["forms"][2]["rules"].append(
                {
                    "key": "r",
                    "expr": "[abscess] = 1",
                    "when": "[x] = 1",
                    "message": {"en": "m"},
                    "fields": ["abscess"],
                }
            ),
            "forms[2].rules[0].when",
            "unknown field 'x'",
            id="rule-when",
        ),
        pytest.param(
            lambda d: d["forms"][0]["fields"][0].update(calc="[sex]"),
            "forms[0].fields[0].calc",
            "only calc fields",
            id="calc-on-non-calc",
        ),
        pytest.param(
            lambda d: d["response"].update(size_fields=["us_size_9_mm"]),
            "response.size_fields[0]",
            "no field 'us_size_9_mm'",
            id="response-field",
        ),
        pytest.param(
            lambda d: d["response"].update(investigator_field="abscess"),
            "response.investigator_field",
            "must be choice",
            id="response-investigator-type",
        ),
        pytest.param(
            lambda d: d["response"].update(relapse_field="relapse"),
            "response.relapse_field",
            "no field 'relapse' on form 'follow_up'",
            id="response-relapse-field",
        ),
        pytest.param(
            lambda d: d["response"].update(baseline_form="intake"),
            "response.baseline_form",
            "no form 'intake'",
            id="response-baseline-form",
        ),
        pytest.param(
            lambda d: d["forms"][1]["fields"].clear(),
            "response.size_fields[0]",
            "baseline form 'baseline' to compare with",
            id="response-size-not-at-baseline",
        ),
        pytest.param(
            lambda d: d["endpoints"][0].update(event="cure"),
            "endpoints[0].event",
            "unknown event 'cure'",
            id="endpoint-event",
        ),
        pytest.param(
            lambda d: d["endpoints"][0].update(competing=["surgery", "dragons"]),
            "endpoints[0].competing[1]",
            "unknown event 'dragons'",
            id="endpoint-competing",
        ),
        pytest.param(
            lambda d: d["endpoints"].append(
                {"key": "cr", "label": {"en": "x"}, "kind": "binary", "event": "complete_response"}
            ),
            "endpoints[1].horizon_days",
            "needs a horizon",
            id="binary-horizon",
        ),
        pytest.param(
            lambda d: d["endpoints"].append(dict(d["endpoints"][0])),
            "endpoints[1].key",
            "used more than once",
            id="duplicate-endpoint",
        ),
        pytest.param(
            lambda d: d["schedule"].append(dict(d["schedule"][2])),
            "schedule[3].key",
            "event 'month_1' is used more than once",
            id="duplicate-event",
        ),
        pytest.param(
            lambda d: d["schedule"][2].update(day=400),
            "schedule[2].day",
            "after follow_up_days",
            id="event-after-follow-up",
        ),
        pytest.param(
            lambda d: d["schedule"][2].update(arms=["ghost"]),
            "schedule[2].arms[0]",
            "no arm 'ghost'",
            id="event-arm",
        ),
        pytest.param(
            lambda d: d["schedule"][2].update(repeat={"every_days": 2, "count": 3}),
            "schedule[2].forms[0]",
            "not repeating",
            id="repeat-needs-repeating-form",
        ),
        pytest.param(
            lambda d: d["schedule"][2].update(forms=["screening"]),
            "forms[2].key",
            "in no scheduled event",
            id="unscheduled-form",
        ),
        pytest.param(
            lambda d: d["arms"].append({"key": "two", "label": {"en": "2"}}),
            "arms",
            "exactly one arm",
            id="single-arm-two-arms",
        ),
    ],
)
def test_cross_reference_problems(change: Any, path: str, fragment: str) -> None:
    problems = _break(change)
    assert any(p.field == path and fragment in p.message for p in problems), problems


def _randomised(doc: dict[str, Any]) -> None:
    doc["design"] = "randomised"
    doc["arms"] = [
        {"key": "a", "label": {"en": "A"}, "ratio": 2},
        {"key": "b", "label": {"en": "B"}},
    ]
    doc["randomisation"] = {"method": "permuted_blocks", "block_sizes": [3, 4]}
    doc["strata"] = [{"key": "s", "form": "screening", "field": "sex", "levels": ["female", "x"]}]
    doc["endpoints"][0]["non_inferiority_margin"] = 0.15


def test_randomised_design_checks() -> None:
    fields = {p.field: p.message for p in _break(_randomised)}
    assert "not a multiple of 3" in fields["randomisation.block_sizes[1]"]
    assert "randomisation.block_sizes[0]" not in fields
    assert fields["strata[0].levels[1]"] == "'x' is not a choice of 'sex': female, male"
    margin = [p.message for p in _break(_randomised) if p.field.endswith("inferiority_margin")]
    assert margin == [
        "must be a negative difference in proportions between -1 and 0",
        "only for binary endpoints",
    ]


def test_stratum_must_be_a_choice_field() -> None:
    def change(doc: dict[str, Any]) -> None:
        _randomised(doc)
        doc["randomisation"]["block_sizes"] = [6]
        doc["endpoints"][0].pop("non_inferiority_margin")
        doc["strata"][0]["field"] = "age"

    assert _break(change) == [Problem("strata[0].field", "field 'age' is integer, not choice")]


def test_all_cross_reference_problems_are_reported_together() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["schedule"][2]["forms"].append("visit")
        doc["endpoints"][0]["event"] = "cure"
        doc["eligibility"][0]["expr"] = "[age] >"

    paths = [p.field for p in _break(change)]
    assert paths == ["schedule[2].forms[1]", "eligibility[0].expr", "endpoints[0].event"]


def test_context_names_are_allowed() -> None:
    doc = _minimal()
    doc["forms"][0]["fields"][0]["show_if"] = "datediff([date_of_birth], today(), 'y') >= 16"
    assert parse_protocol(_text(doc)).form("screening").field("age").show_if


# ------------------------------------------------------------------------------ files and builtins


def test_load_protocol_from_file(tmp_path: Path) -> None:
    path = tmp_path / "mini.yaml"
    path.write_text(_text(_minimal()), encoding="utf-8")
    assert load_protocol(path).id == "mini"
    with pytest.raises(NotFound):
        load_protocol(tmp_path / "missing.yaml")
    path.write_text("id: [\n", encoding="utf-8")
    with pytest.raises(ProtocolError, match=str(path)):
        load_protocol(path)


def test_builtin_ids() -> None:
    assert builtin_ids() == BUILTIN_IDS
    assert [p.id for p in builtin_protocols()] == BUILTIN_IDS
    assert builtin_protocol("lavage-observational") is builtin_protocol("lavage-observational")
    with pytest.raises(NotFound, match="no built-in protocol 'nope'"):
        builtin_protocol("nope")


@pytest.mark.parametrize("protocol_id", BUILTIN_IDS)
def test_builtin_passes_every_check(protocol_id: str) -> None:
    protocol = builtin_protocol(protocol_id)
    assert check_protocol(protocol) == []
    # every label and help text is translated
    for form in protocol.forms:
        assert form.title.zh
        for field in form.fields:
            assert field.label.zh, field.key
            assert field.help is None or field.help.zh
            assert all(choice.label.zh for choice in field.choices)
    assert all(rule.message.zh for rule in protocol.eligibility)
    assert {b.key for b in protocol.benchmarks} >= {
        "steroid_cr",
        "steroid_time_to_cr",
        "surgery_cr",
        "mtx_steroid_cr",
        "pooled_recurrence",
    }
    assert all(b.source for b in protocol.benchmarks)
    assert all(e.event in ENDPOINT_EVENTS for e in protocol.endpoints)
    assert sum(e.primary for e in protocol.endpoints) == 1
    # the canonical definition round-trips through the model
    assert Protocol.model_validate(protocol.model_dump()).sha256() == protocol.sha256()


def _keys(protocol: Protocol, form: str) -> list[str]:
    return [f.key for f in protocol.form(form).fields]


SCREENING = [
    "screening_date",
    "age",
    "sex",
    "non_lactating_6m",
    "pathology_confirmed",
    "diagnosis",
    "carcinoma_excluded",
    "consent_signed",
    "consent_date",
]
BASELINE = [
    "assessment_date",
    "height_cm",
    "weight_kg",
    "bmi",
    "parity",
    "months_since_last_lactation",
    "oral_contraceptive",
    "smoking",
    "nipple_inversion",
    "side",
    "presentation",
    "symptom_weeks",
    "crp_mg_l",
    "wbc_10e9_l",
    "prolactin_ng_ml",
    "ana",
    "ace",
    "tsh_miu_l",
    "hypothyroidism",
    "culture",
    "organism",
    "purulent_aspirate",
    "infection_evidence",
    "us_size_1_mm",
    "us_size_2_mm",
    "us_size_3_mm",
    "birads",
    "pathology",
    "severity_score",
]
FOLLOW_UP = [
    "assessment_date",
    "mass",
    "erythema",
    "abscess",
    "fistula",
    "ulcer",
    "skin_involvement",
    "new_abscess",
    "new_fistula",
    "scar_only",
    "us_done",
    "us_size_1_mm",
    "us_size_2_mm",
    "us_size_3_mm",
    "treatment_escalated",
    "investigator_response",
    "relapse",
]
LAVAGE = [
    "session_date",
    "session_number",
    "procedure",
    "steroid_agent",
    "steroid_dose_mg",
    "antibiotic_added",
    "antibiotic_agent",
    "irrigation_volume_ml",
    "ducts_cannulated",
    "duration_min",
    "complication",
]
COURSE = [
    "start_date",
    "regimen",
    "prednisolone_mg_day",
    "methotrexate_mg_week",
    "planned_weeks",
    "stop_date",
]


@pytest.mark.parametrize(
    ("protocol_id", "prefix", "arms", "extra_screening", "lavage", "course", "months"),
    [
        pytest.param(
            "lavage-observational",
            "LAV",
            ["lavage"],
            [],
            True,
            False,
            [1, 2, 3, 6, 9, 12, 18, 24],
            id="observational",
        ),
        pytest.param(
            "lavage-vs-steroid-ni",
            "NIL",
            ["lavage", "steroid"],
            ["severity_score", "severity_group"],
            True,
            True,
            [1, 2, 3, 6, 9, 12],
            id="ni",
        ),
        pytest.param(
            "refractory-igm-adaptive",
            "RIG",
            ["a_supportive", "b_prednisolone", "c_methotrexate"],
            ["refractory_or_recurrent"],
            False,
            True,
            [1, 2, 3, 6, 9, 12, 18, 24],
            id="adaptive",
        ),
    ],
)
def test_builtin_keys_others_depend_on(
    protocol_id: str,
    prefix: str,
    arms: list[str],
    extra_screening: list[str],
    lavage: bool,
    course: bool,
    months: list[int],
) -> None:
    p = builtin_protocol(protocol_id)
    assert p.study_id_prefix == prefix
    assert [a.key for a in p.arms] == arms
    screening = _keys(p, "screening")
    assert screening[: len(SCREENING)] == SCREENING
    assert set(extra_screening) <= set(screening)
    assert _keys(p, "baseline") == BASELINE
    assert _keys(p, "follow_up") == FOLLOW_UP
    assert _keys(p, "rescue_therapy") == ["start_date", "therapy", "reason"]
    assert _keys(p, "adverse_event") == [
        "term",
        "onset_date",
        "resolved_date",
        "ctcae_grade",
        "serious",
        "relatedness",
        "outcome",
    ]
    assert _keys(p, "end_of_study") == ["end_date", "reason", "last_contact_date"]
    assert ("lavage_session" in {f.key for f in p.forms}) == lavage
    assert ("treatment_course" in {f.key for f in p.forms}) == course
    if lavage:
        assert _keys(p, "lavage_session") == LAVAGE
        event = p.event("lavage")
        assert (event.kind, event.day, event.window_before, event.window_after) == (
            "treatment",
            0,
            1,
            1,
        )
        assert event.repeat is not None and (event.repeat.every_days, event.repeat.count) == (2, 7)
        assert p.settings["lavage_course_days"] == 14
        assert p.settings["procedure_max_minutes"] == 12
    if course:
        assert _keys(p, "treatment_course") == COURSE
    follow_ups = [e for e in p.schedule if e.kind == "follow_up"]
    assert [e.key for e in follow_ups] == [f"month_{m}" for m in months]
    assert [e.day for e in follow_ups] == [30 * m for m in months]
    assert p.event("end_of_study").day == p.follow_up_days
    assert p.event("screening").kind == "screening"
    assert p.event("unscheduled").forms == ["rescue_therapy", "adverse_event"]


def test_ni_trial_facts() -> None:
    p = builtin_protocol("lavage-vs-steroid-ni")
    assert (p.registration, p.target_enrolment, p.design) == ("NCT03724903", 140, "randomised")
    assert p.randomisation.method == "permuted_blocks"
    assert p.randomisation.block_sizes == [4, 6]
    assert [(s.key, s.form, s.field, s.levels) for s in p.strata] == [
        ("severity", "screening", "severity_group", ["mild", "severe"])
    ]
    primary = next(e for e in p.endpoints if e.primary)
    assert (primary.key, primary.kind, primary.horizon_days) == ("cr_rate_12m", "binary", 365)
    assert primary.non_inferiority_margin == pytest.approx(-0.15)
    assert p.event("lavage").arms == ["lavage"]
    assert p.event("treatment_start").arms == ["steroid"]


def test_observational_and_adaptive_facts() -> None:
    obs = builtin_protocol("lavage-observational")
    assert (obs.registration, obs.target_enrolment, obs.design) == ("NCT02794688", 32, "single_arm")
    primary = next(e for e in obs.endpoints if e.primary)
    assert (primary.key, primary.event) == ("time_to_cr", "complete_response")
    assert primary.competing == ["surgery", "systemic_steroid", "methotrexate"]
    adaptive = builtin_protocol("refractory-igm-adaptive")
    assert adaptive.design == "adaptive" and adaptive.follow_up_days >= 730
    assert adaptive.randomisation.method == "permuted_blocks"
    assert parse(adaptive.eligibility[-2].expr) == parse("[refractory_or_recurrent] = 1")
    assert adaptive.form("baseline").field("presentation").choice_label("erythema_nodosum") == (
        "Erythema nodosum"
    )


def test_benchmark_figures() -> None:
    marks = {b.key: b for b in builtin_protocol("lavage-observational").benchmarks}
    assert (marks["steroid_cr"].low, marks["steroid_cr"].high) == (0.63, 0.87)
    assert (marks["steroid_time_to_cr"].low, marks["steroid_time_to_cr"].high) == (2.0, 8.0)
    assert (marks["surgery_cr"].low, marks["surgery_cr"].high) == (0.89, 1.0)
    assert marks["mtx_steroid_cr"].low == 0.943
    assert marks["pooled_recurrence"].low == 0.17


def test_builtin_yaml_copy_still_loads(tmp_path: Path) -> None:
    doc = builtin_protocol("lavage-vs-steroid-ni").model_dump(mode="json", exclude_defaults=True)
    path = tmp_path / "copy.yaml"
    path.write_text(_text(copy.deepcopy(doc)), encoding="utf-8")
    assert load_protocol(path) == builtin_protocol("lavage-vs-steroid-ni")


def test_procedure_settings_are_checked() -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["settings"] = {
            "procedure": {
                "checks_form": "follow_up",
                "record_form": "ductoscopy",
                "rules": [
                    {
                        "key": "r",
                        "level": "query",
                        "forms": ["follow_up", "ghost"],
                        "when": "[abscess] = ",
                        "message": {"en": "m"},
                    },
                    {
                        "key": "s",
                        "level": "shout",
                        "forms": ["follow_up"],
                        "when": "1",
                        "message": {"en": "m"},
                    },
                ],
            }
        }

    problems = _break(change)
    assert [p.field for p in problems] == ["settings.procedure.rules[1].level"]

    def change_forms(doc: dict[str, Any]) -> None:
        change(doc)
        doc["settings"]["procedure"]["rules"].pop()

    problems = _break(change_forms)
    assert [(p.field, p.message.split(":")[0]) for p in problems] == [
        ("settings.procedure.record_form", "no form 'ductoscopy' in forms"),
        ("settings.procedure.rules[0].forms[1]", "no form 'ghost' in forms"),
        ("settings.procedure.rules[0].when", "position 13"),
    ]
