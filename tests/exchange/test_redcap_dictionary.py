"""REDCap data dictionaries: export the built-in protocols, import both header styles, bad input."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ductal.errors import ValidationError
from ductal.exchange.redcap_dictionary import (
    API_COLUMNS,
    CSV_COLUMNS,
    dictionary_csv,
    import_dictionary,
    variable_names,
)
from ductal.protocols.loader import builtin_protocols, check_protocol
from ductal.protocols.model import Protocol

from .redcap_rules import redcap_problems

PROTOCOLS = builtin_protocols()


def _csv(rows: list[list[str]], header: tuple[str, ...] = CSV_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(row + [""] * (18 - len(row)))
    return out.getvalue()


def _row(name: str, form: str, kind: str, label: str, **cols: str) -> list[str]:
    values = dict.fromkeys(API_COLUMNS, "")
    values.update(field_name=name, form_name=form, field_type=kind, field_label=label, **cols)
    return [values[c] for c in API_COLUMNS]


# A dictionary as a partner hospital's REDCap project would have it: every field type.
FOREIGN = [
    _row("record_id", "enrolment", "text", "Record ID"),
    _row(
        "enrol_date",
        "enrolment",
        "text",
        "Date",
        text_validation_type_or_show_slider_number="date_ymd",
        required_field="y",
    ),
    _row("pt_name", "enrolment", "text", "Patient name", identifier="y"),
    _row(
        "email",
        "enrolment",
        "text",
        "E-mail",
        text_validation_type_or_show_slider_number="email",
        identifier="y",
    ),
    _row(
        "age",
        "enrolment",
        "text",
        "Age",
        text_validation_type_or_show_slider_number="integer",
        text_validation_min="18",
        text_validation_max="90",
    ),
    _row(
        "crp",
        "enrolment",
        "text",
        "CRP",
        text_validation_type_or_show_slider_number="number_1dp",
        field_note="mg/L",
    ),
    _row("history", "enrolment", "notes", "History"),
    _row(
        "dx",
        "enrolment",
        "dropdown",
        "Diagnosis",
        select_choices_or_calculations="1, IGM | 2, PD | 3, Other",
    ),
    _row("side", "enrolment", "radio", "Side", select_choices_or_calculations="L, Left | R, Right"),
    _row(
        "signs",
        "enrolment",
        "checkbox",
        "Signs",
        select_choices_or_calculations="1, Mass | 2, Abscess | 3, Fistula",
    ),
    _row(
        "abscess_size",
        "enrolment",
        "text",
        "Abscess size",
        text_validation_type_or_show_slider_number="number",
        branching_logic="[signs(2)] = '1'",
    ),
    _row("smoker", "enrolment", "yesno", "Smoker"),
    _row("pregnant", "enrolment", "truefalse", "Pregnant"),
    _row(
        "pain",
        "enrolment",
        "slider",
        "Pain",
        select_choices_or_calculations="None | | Worst",
        text_validation_type_or_show_slider_number="number",
    ),
    _row("note1", "enrolment", "descriptive", "Please check the chart"),
    _row("double_age", "enrolment", "calc", "Age x 2", select_choices_or_calculations="[age] * 2"),
    _row("consent_form", "enrolment", "file", "Consent scan"),
    _row(
        "visit_date",
        "visit",
        "text",
        "Visit date",
        text_validation_type_or_show_slider_number="date_ymd",
        section_header="Visit",
    ),
    _row(
        "erythema",
        "visit",
        "radio",
        "Erythema",
        select_choices_or_calculations="0, No | 1, Yes",
        matrix_group_name="signs_m",
    ),
    _row(
        "ulcer",
        "visit",
        "radio",
        "Ulcer",
        select_choices_or_calculations="0, No | 1, Yes",
        matrix_group_name="signs_m",
    ),
    _row(
        "seen_at",
        "visit",
        "text",
        "Seen at",
        text_validation_type_or_show_slider_number="datetime_ymd",
    ),
]


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=[p.id for p in PROTOCOLS])
def test_round_trip_loses_nothing(protocol: Protocol) -> None:
    text = dictionary_csv(protocol)
    result = import_dictionary(text)
    assert result.protocol == protocol
    assert result.protocol.sha256() == protocol.sha256()
    assert check_protocol(result.protocol) == []
    assert result.report.errors == []


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=[p.id for p in PROTOCOLS])
def test_export_meets_redcap_rules(protocol: Protocol) -> None:
    text = dictionary_csv(protocol)
    assert redcap_problems(text) == []
    header = next(csv.reader(io.StringIO(text)))
    assert tuple(header) == CSV_COLUMNS


def test_api_header_names_read_the_same() -> None:
    protocol = PROTOCOLS[0]
    assert import_dictionary(dictionary_csv(protocol, header="api")).protocol == protocol


def test_names_shared_by_forms_are_made_unique() -> None:
    protocol = next(p for p in PROTOCOLS if p.id == "lavage-observational")
    names = variable_names(protocol)
    assert len(set(names.values())) == len(names)
    assert names[("baseline", "assessment_date")] == "baseline_assessment_date"
    assert names[("follow_up", "assessment_date")] == "follow_up_assessment_date"
    assert names[("baseline", "bmi")] == "bmi"
    definition = protocol.model_dump(mode="json")
    follow_up = next(f for f in definition["forms"] if f["key"] == "follow_up")
    scar = next(f for f in follow_up["fields"] if f["key"] == "scar_only")
    scar["show_if"] = "[assessment_date] <> '' and not isblank([us_size_1_mm])"
    changed = Protocol.model_validate(definition)
    text = dictionary_csv(changed)
    # branching logic is rewritten to the REDCap names of the same form, in REDCap's dialect
    expected = "[follow_up_assessment_date] <> '' and [follow_up_us_size_1_mm] <> ''"
    assert expected in text
    assert redcap_problems(text) == []
    assert import_dictionary(text).protocol == changed


def test_foreign_dictionary_maps_every_field_type() -> None:
    result = import_dictionary(_csv(FOREIGN), protocol_id="partner-study")
    protocol = result.protocol
    assert protocol is not None
    form = protocol.form("enrolment")
    kinds = {f.key: f.type for f in form.fields}
    assert kinds == {
        "enrol_date": "date",
        "pt_name": "text",
        "email": "text",
        "age": "integer",
        "crp": "number",
        "history": "text",
        "dx": "choice",
        "side": "choice",
        "signs": "multi_choice",
        "abscess_size": "number",
        "smoker": "yes_no",
        "pregnant": "yes_no",
        "pain": "integer",
        "double_age": "calc",
        "consent_form": "file",
    }
    assert form.field("pt_name").identifier and form.field("email").identifier
    assert form.field("age").min == 18 and form.field("age").max == 90
    assert form.field("crp").decimals == 1 and form.field("crp").help is not None
    assert form.field("enrol_date").required
    assert form.field("abscess_size").show_if == "[signs(2)] = '1'"
    assert [c.code for c in form.field("dx").choices] == ["1", "2", "3"]
    assert protocol.form("visit").field("seen_at").type == "datetime"
    warnings = {(w.where, w.item): w.message for w in result.report.warnings}
    assert "matrix group" in warnings[("line 20", "erythema")]
    assert "descriptive" in warnings[("line 16", "note1")]
    assert "email" in warnings[("line 5", "email")]
    assert "slider" in warnings[("line 15", "pain")]
    # only ductal's response criteria are left for the study team to complete
    assert all(p.field.startswith("response.") for p in check_protocol(protocol))


BAD = [
    *FOREIGN[:3],
    _row("mystery", "enrolment", "hologram", "Unknown type"),  # line 5
    _row("age", "enrolment", "text", "Age again"),  # line 6: not a duplicate yet (age is later)
    _row("pt_name", "enrolment", "text", "Again"),  # line 7: duplicate
    _row("broken", "enrolment", "text", "Broken", branching_logic="[age] >>= 3"),  # line 8
    _row("elsewhere", "enrolment", "text", "Other form", branching_logic="[visit_date] <> ''"),
    _row("crossevent", "enrolment", "text", "X", branching_logic="[visit_arm_1][age] = 1"),
    _row("choices", "enrolment", "radio", "No choices"),  # line 11
    _row("Bad-Name", "enrolment", "text", "Bad"),  # line 12
    _row(
        "visit_date",
        "visit",
        "text",
        "Visit date",
        text_validation_type_or_show_slider_number="date_ymd",
    ),
    _row("weird", "visit", "text", "W", text_validation_type_or_show_slider_number="nonsense"),
]


def test_bad_dictionary_lists_every_problem_and_imports_nothing() -> None:
    with pytest.raises(ValidationError) as caught:
        import_dictionary(_csv(BAD), protocol_id="bad-study")
    fields = [p.field for p in caught.value.problems]
    messages = " | ".join(str(p) for p in caught.value.problems)
    assert "line 5 mystery" in fields and "unknown field type" in messages
    assert "line 7 pt_name" in fields and "duplicate variable name" in messages
    assert "line 8 broken" in fields
    assert "line 9 elsewhere" in fields and "not on the same instrument" in messages
    assert "line 10 crossevent" in fields
    assert "line 11 choices" in fields
    assert "line 12 Bad-Name" in fields
    assert "line 14 weird" in fields
    assert "nothing was imported" in caught.value.message


def test_partial_import_keeps_the_valid_part() -> None:
    result = import_dictionary(_csv(BAD), protocol_id="bad-study", partial=True)
    assert result.protocol is not None
    keys = {f.key for f in result.protocol.form("enrolment").fields}
    assert keys == {"enrol_date", "pt_name", "age"}
    assert len(result.report.errors) == 8


def test_empty_and_headless_files_are_reported() -> None:
    with pytest.raises(ValidationError, match="problem"):
        import_dictionary("")
    with pytest.raises(ValidationError):
        import_dictionary("a,b,c\n1,2,3\n")


def test_foreign_dictionary_needs_an_id() -> None:
    with pytest.raises(ValidationError, match="problem"):
        import_dictionary(_csv(FOREIGN))


_piece = st.sampled_from([*"abc_019[]()'=<>|, \"\n@{}:", "@DUCTAL=", '{"key":', "@CHARLIMIT=3"])
_cell = st.lists(_piece, max_size=8).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["record_id", "a", "b", "a_b", "B", "", "c1"]),
            st.sampled_from(["f", "g", "", "F"]),
            st.sampled_from(["text", "radio", "checkbox", "calc", "yesno", "slider", "x", ""]),
            _cell,
            _cell,
            st.sampled_from(["", "integer", "date_ymd", "number_2dp", "bogus"]),
            _cell,
        ),
        max_size=8,
    )
)
def test_malformed_dictionaries_never_crash(
    rows: list[tuple[str, str, str, str, str, str, str]],
) -> None:
    body = [
        _row(
            n,
            f,
            k,
            "L",
            select_choices_or_calculations=c,
            branching_logic=b,
            text_validation_type_or_show_slider_number=v,
            field_annotation=a,
        )
        for n, f, k, c, b, v, a in rows
    ]
    text = _csv(body)
    try:
        result = import_dictionary(text, protocol_id="fuzz")
    except ValidationError as exc:
        assert exc.problems
        assert all(p.field.startswith("line ") for p in exc.problems)
        partial = import_dictionary(text, protocol_id="fuzz", partial=True)
        assert partial.report.errors
    else:
        assert result.protocol is not None
        assert result.report.errors == []


@pytest.mark.parametrize(
    ("redcap", "ductal"),
    [
        pytest.param(
            'datediff([a],[b],"d") > 30',
            'abs(datediff([a], [b], "d")) > 30',
            id="unsigned-by-default",
        ),
        pytest.param(
            'datediff([a], [b], "y", "ymd", true) >= 18',
            'datediff([a], [b], "y") >= 18',
            id="signed-with-format",
        ),
        pytest.param(
            'datediff([a], "today", "y", true)', 'datediff([a], today(), "y")', id="today"
        ),
        pytest.param(
            'datediff([a],[b],"m","dmy")', 'abs(datediff([a], [b], "m"))', id="format-only"
        ),
    ],
)
def test_redcap_datediff_means_what_redcap_means(redcap: str, ductal: str) -> None:
    from ductal.exchange._expressions import from_redcap
    from ductal.protocols.logic import parse

    assert from_redcap(redcap) == ductal
    # REDCap's unsigned difference: b before a still counts as a positive number of days
    values = {"a": "2020-03-01", "b": "2020-01-01"}
    if "abs(" in ductal and '"d"' in ductal:
        assert parse(ductal.replace(" > 30", "")).evaluate(values) == 60


def test_datediff_is_written_signed_for_redcap() -> None:
    from ductal.exchange._expressions import to_redcap

    text, notes = to_redcap("datediff([a], today(), 'd') >= -30", {"a": "form_a"})
    assert text == "datediff([form_a], 'today', 'd', 'ymd', true) >= -30"
    assert notes == []
