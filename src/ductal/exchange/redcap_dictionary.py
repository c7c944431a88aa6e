"""REDCap data dictionaries: a ductal protocol out as a dictionary CSV, and a dictionary CSV in.

Export writes the 18 standard columns with REDCap's CSV header names. Every field keeps its
REDCap-native meaning (field type, validation, choices, branching logic, ``Identifier?``,
``Required Field?``); what REDCap has no column for travels in the Field Annotation as JSON after
a ``@DUCTAL`` tag, so that protocol → dictionary → protocol loses nothing:

* ``@DUCTAL-PROTOCOL={...}`` on ``record_id``: the study-level definition (arms, schedule,
  eligibility, endpoints, ...), i.e. the protocol without its forms;
* ``@DUCTAL-FORM={...}`` on the first field of each instrument: title, description, repeating,
  cross-field rules;
* ``@DUCTAL={...}`` on each field: the ductal key (REDCap names are unique per project, ductal
  keys per form), type, Chinese labels, help, unit, decimals.

The first instrument, ``ductal_subject``, holds ``record_id`` and the subject-level facts a REDCap
project keeps in fields (site, treatment arm — as REDCap's randomisation module does —, status,
dates). Import reads either header style (CSV names or the API's snake_case names), maps what it
can, and reports every row it could not map.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pydantic

from ductal.errors import ProtocolError
from ductal.exchange._expressions import from_redcap, rename_fields, to_redcap
from ductal.exchange.report import ImportReport
from ductal.models import SUBJECT_STATUSES
from ductal.protocols.loader import check_protocol
from ductal.protocols.logic import ExpressionSyntaxError, parse
from ductal.protocols.model import KEY_PATTERN, FieldDef, FormDef, Protocol

__all__ = [
    "API_COLUMNS",
    "CSV_COLUMNS",
    "SUBJECT_FIELDS",
    "SUBJECT_FORM",
    "DictionaryImport",
    "dictionary_csv",
    "dictionary_rows",
    "import_dictionary",
    "variable_names",
]

CSV_COLUMNS = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)
API_COLUMNS = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)
_HEADER_TO_API = dict(zip(CSV_COLUMNS, API_COLUMNS, strict=True))

SUBJECT_FORM = "ductal_subject"
SUBJECT_FIELDS = (
    "record_id",
    "ductal_site",
    "ductal_arm",
    "ductal_stratum",
    "ductal_status",
    "ductal_status_reason",
    "ductal_screened_on",
    "ductal_enrolled_on",
)

FIELD_TYPES = (
    "text",
    "notes",
    "dropdown",
    "radio",
    "checkbox",
    "yesno",
    "truefalse",
    "calc",
    "file",
    "slider",
    "descriptive",
    "sql",
)
_DATE_VALIDATIONS = {"date_ymd", "date_mdy", "date_dmy", "date"}
_DATETIME_VALIDATIONS = {
    f"datetime{s}_{o}" for s in ("", "_seconds") for o in ("ymd", "mdy", "dmy")
} | {"datetime"}
_INTEGER_VALIDATIONS = {"integer", "int"}
_NUMBER_VALIDATIONS = re.compile(r"^(number|float)(_(\d)dp)?(_comma_decimal)?$")
_TEXTLIKE_VALIDATIONS = {
    "email",
    "phone",
    "phone_australia",
    "alpha_only",
    "zipcode",
    "postalcode_canada",
    "postalcode_australia",
    "postalcode_french",
    "postalcode_germany",
    "ssn",
    "time",
    "time_mm_ss",
    "time_hh_mm_ss",
    "vmrn",
    "mrn_10d",
    "mrn_generic",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_KEY = re.compile(KEY_PATTERN)
_TAG = re.compile(r"@DUCTAL(-PROTOCOL|-FORM)?=")
_CHARLIMIT = re.compile(r"@CHARLIMIT\s*=\s*['\"]?(\d+)")


# --------------------------------------------------------------------------------------------
# Export


def variable_names(protocol: Protocol) -> dict[tuple[str, str], str]:
    """Return the REDCap variable name of each (form, field key) of ``protocol``.

    REDCap names are unique in a project, ductal keys only in a form: a key used on more than
    one form (or clashing with a reserved name) becomes ``<form>_<key>``.
    """
    counts = Counter(f.key for form in protocol.forms for f in form.fields)
    reserved = set(SUBJECT_FIELDS) | {f"{form.key}_complete" for form in protocol.forms}
    names: dict[tuple[str, str], str] = {}
    taken: set[str] = set(reserved)
    for form in protocol.forms:
        for f in form.fields:
            if counts[f.key] == 1 and f.key not in reserved:
                names[(form.key, f.key)] = f.key
                taken.add(f.key)
    for form in protocol.forms:
        for f in form.fields:
            if (form.key, f.key) in names:
                continue
            name = f"{form.key}_{f.key}"
            suffix = 2
            while name in taken:
                name = f"{form.key}_{f.key}_{suffix}"
                suffix += 1
            names[(form.key, f.key)] = name
            taken.add(name)
    return names


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _tag(name: str, payload: dict[str, Any]) -> str:
    return f"@{name}=" + json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _choices(field: FieldDef) -> str:
    return " | ".join(f"{c.code}, {c.label.en}" for c in field.choices)


def _field_row(
    form: FormDef, field: FieldDef, name: str, renames: dict[str, str], notes: list[str]
) -> dict[str, str]:
    row = dict.fromkeys(API_COLUMNS, "")
    row["field_name"] = name
    row["form_name"] = form.key
    row["field_label"] = field.label.en
    row["field_note"] = field.help.en if field.help else (field.unit or "")
    row["identifier"] = "y" if field.identifier else ""
    row["required_field"] = "y" if field.required else ""
    annotation: list[str] = []
    kind = field.type
    if kind in ("text", "integer", "number", "date", "datetime"):
        row["field_type"] = "text"
        row["text_validation_type_or_show_slider_number"] = {
            "text": "",
            "integer": "integer",
            "number": f"number_{field.decimals}dp"
            if field.decimals is not None and 1 <= field.decimals <= 4
            else "number",
            "date": "date_ymd",
            "datetime": "datetime_seconds_ymd",
        }[kind]
        row["text_validation_min"] = _number(field.min)
        row["text_validation_max"] = _number(field.max)
        if field.max_length is not None:
            annotation.append(f"@CHARLIMIT={field.max_length}")
    elif kind == "choice":
        row["field_type"] = "radio"
        row["select_choices_or_calculations"] = _choices(field)
    elif kind == "multi_choice":
        row["field_type"] = "checkbox"
        row["select_choices_or_calculations"] = _choices(field)
    elif kind == "yes_no":
        row["field_type"] = "yesno"
    elif kind == "calc":
        row["field_type"] = "calc"
        assert field.calc is not None
        text, more = to_redcap(field.calc, renames)
        row["select_choices_or_calculations"] = text
        notes.extend(f"{name}: {n}" for n in more)
    else:
        row["field_type"] = "file"
    if field.show_if:
        text, more = to_redcap(field.show_if, renames)
        row["branching_logic"] = text
        notes.extend(f"{name}: {n}" for n in more)
    extra = field.model_dump(mode="json", exclude_defaults=True)
    annotation.append(_tag("DUCTAL", extra))
    row["field_annotation"] = " ".join(annotation)
    return row


def _subject_rows(protocol: Protocol) -> list[dict[str, str]]:
    def row(name: str, label: str, kind: str = "text", **more: str) -> dict[str, str]:
        values = dict.fromkeys(API_COLUMNS, "")
        values.update(field_name=name, form_name=SUBJECT_FORM, field_type=kind, field_label=label)
        values.update(more)
        return values

    definition = protocol.model_dump(mode="json", exclude={"forms"})
    arms = " | ".join(f"{a.key}, {a.label.en}" for a in protocol.arms)
    statuses = " | ".join(f"{s}, {s.replace('_', ' ')}" for s in SUBJECT_STATUSES)
    return [
        row(
            "record_id",
            "Study id",
            section_header=protocol.title.en,
            field_annotation=_tag("DUCTAL-PROTOCOL", definition),
        ),
        row("ductal_site", "Site code"),
        row(
            "ductal_arm",
            "Treatment arm",
            "dropdown",
            select_choices_or_calculations=arms,
            field_note="As allocated (REDCap arms are not used for treatment arms)",
        ),
        row("ductal_stratum", "Randomisation stratum"),
        row(
            "ductal_status",
            "Subject status",
            "dropdown",
            select_choices_or_calculations=statuses,
            required_field="y",
        ),
        row("ductal_status_reason", "Reason for the status", "notes"),
        row(
            "ductal_screened_on",
            "Screening date",
            text_validation_type_or_show_slider_number="date_ymd",
        ),
        row(
            "ductal_enrolled_on",
            "Enrolment date",
            text_validation_type_or_show_slider_number="date_ymd",
        ),
    ]


def dictionary_rows(protocol: Protocol) -> tuple[list[dict[str, str]], list[str]]:
    """Return the dictionary rows (API column names) of ``protocol`` and notes on inexact steps."""
    names = variable_names(protocol)
    rows = _subject_rows(protocol)
    notes: list[str] = []
    for form in protocol.forms:
        renames = {f.key: names[(form.key, f.key)] for f in form.fields}
        form_rows = [_field_row(form, f, renames[f.key], renames, notes) for f in form.fields]
        if form_rows:
            meta = form.model_dump(mode="json", exclude={"fields", "key"}, exclude_defaults=True)
            first = form_rows[0]
            first["section_header"] = form.title.en
            first["field_annotation"] = (
                _tag("DUCTAL-FORM", meta) + " " + first["field_annotation"]
            ).strip()
        rows.extend(form_rows)
    return rows, notes


def dictionary_csv(protocol: Protocol, *, header: str = "csv") -> str:
    """Return ``protocol`` as a REDCap data dictionary CSV (``header``: ``csv`` or ``api``)."""
    rows, _ = dictionary_rows(protocol)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS if header == "csv" else API_COLUMNS)
    for row in rows:
        writer.writerow([row[c] for c in API_COLUMNS])
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Import


@dataclass
class DictionaryImport:
    """An imported dictionary: the protocol (None when nothing could be built) and the report."""

    protocol: Protocol | None
    report: ImportReport
    variables: dict[str, tuple[str, str]]
    """REDCap variable name → (form, field key), as the records importer needs."""


def _annotations(text: str) -> dict[str, Any]:
    """Return the JSON payloads of the @DUCTAL tags in a Field Annotation, by tag name."""
    found: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    for match in _TAG.finditer(text):
        try:
            value, _ = decoder.raw_decode(text, match.end())
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"@DUCTAL{match.group(1) or ''} is not valid JSON: {exc.msg}"
            ) from None
        found["DUCTAL" + (match.group(1) or "")] = value
    return found


def _read_rows(text: str, report: ImportReport) -> list[tuple[int, dict[str, str]]]:
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        report.error("line 1", "", "the file is empty")
        return []
    except csv.Error as exc:
        report.error("line 1", "", f"not a CSV file: {exc}")
        return []
    columns = [_HEADER_TO_API.get(h.strip(), h.strip()) for h in header]
    if "field_name" not in columns or "form_name" not in columns or "field_type" not in columns:
        report.error(
            "line 1", "", "the header lacks Variable / Field Name, Form Name or Field Type"
        )
        return []
    unknown = [h for h in columns if h not in API_COLUMNS]
    for name in unknown:
        report.warning("line 1", name, "unknown column, ignored")
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(columns):
                report.error(f"line {line}", "", f"{len(values)} cells for {len(columns)} columns")
                continue
            row = dict.fromkeys(API_COLUMNS, "")
            for column, value in zip(columns, values, strict=False):
                if column in row:
                    row[column] = value.strip()
            rows.append((line, row))
    except csv.Error as exc:
        report.error(f"line {reader.line_num}", "", f"broken CSV: {exc}")
    return rows


def _parse_choices(text: str, where: str, name: str, report: ImportReport) -> list[dict[str, Any]]:
    choices: list[dict[str, Any]] = []
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        code, sep, label = part.partition(",")
        code, label = code.strip(), label.strip()
        if not sep or not code:
            report.error(where, name, f"choice {part!r} is not 'code, label'")
            continue
        choices.append({"code": code, "label": {"en": label or code}})
    if not choices:
        report.error(where, name, "has no choices")
    return choices


def _float(text: str, where: str, name: str, what: str, report: ImportReport) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        report.warning(where, name, f"{what} {text!r} is not a number; not kept")
        return None


class _FieldBuilder:
    """Turns one dictionary row into the keyword arguments of a FieldDef (or None)."""

    def __init__(self, report: ImportReport) -> None:
        self.report = report

    def build(
        self, where: str, row: dict[str, str], extra: dict[str, Any]
    ) -> dict[str, Any] | None:
        report = self.report
        name = row["field_name"]
        kind = row["field_type"].lower()
        validation = row["text_validation_type_or_show_slider_number"].lower()
        spec: dict[str, Any] = {"key": extra.get("key", name), "label": {"en": row["field_label"]}}
        if not row["field_label"]:
            spec["label"] = {"en": name}
        if kind not in FIELD_TYPES:
            report.error(where, name, f"unknown field type {row['field_type']!r}")
            return None
        if kind == "descriptive":
            report.warning(where, name, "descriptive text holds no data; not imported")
            return None
        if kind == "sql":
            report.error(where, name, "sql fields depend on the REDCap server; cannot be mapped")
            return None
        choices_text = row["select_choices_or_calculations"]
        if kind in ("text", "notes"):
            if kind == "notes":
                spec["type"] = "text"
            elif validation in _DATE_VALIDATIONS:
                spec["type"] = "date"
            elif validation in _DATETIME_VALIDATIONS:
                spec["type"] = "datetime"
            elif validation in _INTEGER_VALIDATIONS:
                spec["type"] = "integer"
            elif match := _NUMBER_VALIDATIONS.match(validation):
                spec["type"] = "number"
                if match.group(3):
                    spec["decimals"] = int(match.group(3))
            elif validation in _TEXTLIKE_VALIDATIONS:
                spec["type"] = "text"
                report.warning(where, name, f"validation {validation!r} kept as plain text")
            elif validation:
                report.error(where, name, f"unknown validation type {validation!r}")
                return None
            else:
                spec["type"] = "text"
            if spec["type"] in ("integer", "number"):
                low = _float(row["text_validation_min"], where, name, "minimum", report)
                high = _float(row["text_validation_max"], where, name, "maximum", report)
                if low is not None:
                    spec["min"] = low
                if high is not None:
                    spec["max"] = high
            elif row["text_validation_min"] or row["text_validation_max"]:
                report.warning(where, name, "a range on a non-numeric field is not kept")
            if match := _CHARLIMIT.search(row["field_annotation"]):
                spec["max_length"] = int(match.group(1))
        elif kind in ("dropdown", "radio", "checkbox"):
            spec["type"] = "multi_choice" if kind == "checkbox" else "choice"
            spec["choices"] = _parse_choices(choices_text, where, name, report)
            if not spec["choices"]:
                return None
        elif kind in ("yesno", "truefalse"):
            spec["type"] = "yes_no"
            if kind == "truefalse":
                report.warning(where, name, "true/false stored as yes (1) / no (0)")
        elif kind == "calc":
            spec["type"] = "calc"
            if not choices_text:
                report.error(where, name, "calc field without an equation")
                return None
            spec["calc"] = choices_text
        elif kind == "slider":
            spec["type"] = "integer"
            spec["min"] = _float(row["text_validation_min"], where, name, "minimum", report) or 0
            high = _float(row["text_validation_max"], where, name, "maximum", report)
            spec["max"] = 100.0 if high is None else high
            report.warning(where, name, "slider stored as a whole number; its labels are not kept")
        else:
            spec["type"] = "file"
        if row["field_note"]:
            spec["help"] = {"en": row["field_note"]}
        if row["identifier"].lower() in ("y", "yes", "1"):
            spec["identifier"] = True
        if row["required_field"].lower() in ("y", "yes", "1"):
            spec["required"] = True
        if row["branching_logic"]:
            spec["show_if"] = row["branching_logic"].replace("\n", " ")
        if row["section_header"] and "@DUCTAL-FORM=" not in row["field_annotation"]:
            report.warning(where, name, "section header not kept")
        if row["custom_alignment"] or row["question_number"]:
            report.warning(where, name, "survey layout (alignment, question number) not kept")
        if row["matrix_group_name"]:
            report.warning(
                where,
                name,
                f"matrix group {row['matrix_group_name']!r} flattened into separate questions",
            )
        if extra:
            try:
                self._apply(spec, extra)
            except (KeyError, TypeError, AttributeError, ValueError):
                report.error(where, name, "malformed @DUCTAL annotation")
                return None
        return spec

    @staticmethod
    def _apply(spec: dict[str, Any], extra: dict[str, Any]) -> None:
        """Restore the field written by :func:`dictionary_rows` from its @DUCTAL annotation.

        The annotation is authoritative except for what a data manager edits in REDCap's own
        columns: the English label, the English choice labels, required and identifier.
        """
        english = {c["code"]: c["label"]["en"] for c in spec.get("choices", [])}
        label_en = spec["label"]["en"]
        required = spec.get("required", False)
        identifier = spec.get("identifier", False)
        spec.clear()
        spec.update(json.loads(json.dumps(extra)))
        spec["label"]["en"] = label_en
        spec["required"] = required
        spec["identifier"] = identifier
        for choice in spec.get("choices", []):
            if choice["code"] in english:
                choice["label"]["en"] = english[choice["code"]]


def _translate(
    text: str, names: dict[str, str], where: str, item: str, what: str, report: ImportReport
) -> str | None:
    """Return a REDCap expression with variable names replaced by this form's field keys."""
    if re.search(r"\]\s*\[", text):
        report.error(where, item, f"{what} refers to another event ([event][field])")
        return None
    text = from_redcap(text)
    try:
        expr = parse(text)
    except ExpressionSyntaxError as exc:
        report.error(where, item, f"broken {what} at position {exc.position}: {exc.reason}")
        return None
    missing = sorted(ref.name for ref in expr.field_refs if ref.name not in names)
    if missing:
        report.error(
            where, item, f"{what} refers to {', '.join(missing)}, not on the same instrument"
        )
        return None
    return rename_fields(text, names)


def _default_protocol(
    protocol_id: str, title: str, forms: list[dict[str, Any]], repeating: set[str]
) -> dict[str, Any]:
    first = forms[0]["key"]
    others = [f["key"] for f in forms[1:]]
    schedule: list[dict[str, Any]] = [
        {"key": "screening", "label": {"en": "Screening"}, "kind": "screening", "forms": [first]}
    ]
    once = [k for k in others if k not in repeating]
    many = [k for k in others if k in repeating]
    if once:
        schedule.append(
            {"key": "visit", "label": {"en": "Visit"}, "kind": "baseline", "forms": once}
        )
    if many:
        schedule.append(
            {
                "key": "unscheduled",
                "label": {"en": "Unscheduled"},
                "kind": "unscheduled",
                "forms": many,
            }
        )
    return {
        "id": protocol_id,
        "version": "1.0.0",
        "title": {"en": title},
        "design": "single_arm",
        "target_enrolment": 1,
        "follow_up_days": 365,
        "arms": [{"key": "arm_1", "label": {"en": "Arm 1"}}],
        "screening_form": first,
        "schedule": schedule,
    }


def import_dictionary(
    text: str,
    *,
    protocol_id: str | None = None,
    title: str | None = None,
    partial: bool = False,
    source: str = "data dictionary",
) -> DictionaryImport:
    """Return the protocol described by a REDCap data dictionary CSV, with a report.

    Every problem is listed with its line. Without ``partial`` any error raises a
    ValidationError and nothing is returned; with it the rows that map are kept and the others
    listed. A dictionary exported by ductal (with its ``@DUCTAL`` annotations) comes back as the
    same protocol; any other dictionary gets a minimal study definition (one arm, the first
    instrument as screening form, the others on one visit) that the report says to complete.
    ``protocol_id`` overrides the id (required for a dictionary not written by ductal).
    """
    report = ImportReport(source=source)
    rows = _read_rows(text, report)
    seen: dict[str, int] = {}
    protocol_meta: dict[str, Any] | None = None
    forms: dict[str, dict[str, Any]] = {}
    form_lines: dict[str, int] = {}
    variables: dict[str, tuple[str, str]] = {}
    field_lines: dict[tuple[str, str], int] = {}
    builder = _FieldBuilder(report)
    pending: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    record_id_seen = False

    for line, row in rows:
        where = f"line {line}"
        name, form_key = row["field_name"], row["form_name"]
        if not _NAME.match(name):
            report.error(
                where,
                name or "<blank>",
                "variable names are lower-case letters, digits and _ and start with a letter",
            )
            continue
        if name in seen:
            report.error(where, name, f"duplicate variable name (first on line {seen[name]})")
            continue
        seen[name] = line
        if not _NAME.match(form_key):
            report.error(where, name, f"bad form name {form_key!r}")
            continue
        try:
            extra = _annotations(row["field_annotation"])
        except ValueError as exc:
            report.error(where, name, str(exc))
            continue
        if any(not isinstance(v, dict) for v in extra.values()):
            report.error(where, name, "a @DUCTAL annotation must hold a JSON object")
            continue
        if "DUCTAL-PROTOCOL" in extra:
            protocol_meta = extra["DUCTAL-PROTOCOL"]
        if form_key == SUBJECT_FORM or not record_id_seen:
            record_id_seen = True  # REDCap's first field is the record id, whatever its name
            continue  # the record id and ductal's subject instrument are not form data
        if form_key not in forms:
            meta = extra.get("DUCTAL-FORM", {})
            forms[form_key] = {
                "title": {"en": form_key.replace("_", " ").capitalize()},
                **meta,
                "key": form_key,
                "fields": [],
            }
            form_lines[form_key] = line
        pending.append((where, row, extra))

    # fields, then expressions (which need every field of the form)
    form_names: dict[str, dict[str, str]] = {k: {} for k in forms}
    built: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
    for where, row, extra in pending:
        spec = builder.build(where, row, extra.get("DUCTAL", {}))
        if spec is None:
            continue
        form_key = row["form_name"]
        if not _KEY.match(spec["key"]):
            report.error(where, row["field_name"], f"bad field key {spec['key']!r}")
            continue
        if spec["key"] in form_names[form_key].values():
            report.error(where, row["field_name"], f"field key {spec['key']!r} repeated on form")
            continue
        form_names[form_key][row["field_name"]] = spec["key"]
        variables[row["field_name"]] = (form_key, spec["key"])
        field_lines[(form_key, spec["key"])] = int(where.split()[1])
        built.append((where, form_key, spec, row))
    for where, form_key, spec, row in built:
        names = form_names[form_key]
        ok = True
        if not extra_restored(spec, row):
            for key, item in (("show_if", "branching logic"), ("calc", "calculation")):
                if key in spec:
                    translated = _translate(
                        spec[key], names, where, row["field_name"], item, report
                    )
                    if translated is None:
                        ok = False
                    else:
                        spec[key] = translated
        if not ok:
            del variables[row["field_name"]]
            continue
        try:
            forms[form_key]["fields"].append(FieldDef.model_validate(spec).model_dump())
        except pydantic.ValidationError as exc:
            for err in exc.errors(include_url=False):
                report.error(
                    where, row["field_name"], str(err["msg"]).removeprefix("Value error, ")
                )
            del variables[row["field_name"]]

    protocol = _assemble(forms, form_lines, field_lines, protocol_meta, protocol_id, title, report)
    if not partial:
        report.raise_if_errors("use --partial to import the valid part")
    return DictionaryImport(protocol=protocol, report=report, variables=variables)


def extra_restored(spec: dict[str, Any], row: dict[str, str]) -> bool:
    """Return True when the field's expressions came from its @DUCTAL annotation (ductal keys)."""
    return "@DUCTAL=" in row["field_annotation"]


def _assemble(
    forms: dict[str, dict[str, Any]],
    form_lines: dict[str, int],
    field_lines: dict[tuple[str, str], int],
    protocol_meta: dict[str, Any] | None,
    protocol_id: str | None,
    title: str | None,
    report: ImportReport,
) -> Protocol | None:
    usable = [f for f in forms.values() if f["fields"]]
    for key in forms:
        if not forms[key]["fields"]:
            report.error(f"line {form_lines[key]}", key, "instrument has no usable field")
    if not usable:
        report.error("line 1", "", "no instrument could be imported")
        return None
    if protocol_meta is not None:
        definition = dict(protocol_meta)
        if protocol_id:
            definition["id"] = protocol_id
        if title:
            definition["title"] = {"en": title}
    else:
        if not protocol_id:
            report.error("line 1", "", "give a protocol id for a dictionary not written by ductal")
            return None
        repeating = {f["key"] for f in usable if f.get("repeating")}
        definition = _default_protocol(protocol_id, title or protocol_id, usable, repeating)
        report.warning(
            "line 1",
            "",
            "no study definition in the dictionary: one arm, the first instrument as screening "
            "form and the others on one visit were assumed; edit the protocol before use",
        )
    definition["forms"] = usable
    try:
        protocol = Protocol.model_validate(definition)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            path = ".".join(str(p) for p in err["loc"])
            report.error("line 1", path, str(err["msg"]).removeprefix("Value error, "))
        return None
    for problem in check_protocol(protocol):
        where = _where(problem.field, protocol, form_lines, field_lines)
        if protocol_meta is None and problem.field.startswith("response."):
            report.warning(where, problem.field, f"{problem.message} (response criteria)")
        else:
            report.error(where, problem.field, problem.message)
    return protocol


def _where(
    path: str,
    protocol: Protocol,
    form_lines: dict[str, int],
    field_lines: dict[tuple[str, str], int],
) -> str:
    match = re.match(r"forms\[(\d+)\](?:\.fields\[(\d+)\])?", path)
    if match:
        form = protocol.forms[int(match.group(1))]
        if match.group(2) is not None:
            key = form.fields[int(match.group(2))].key
            return f"line {field_lines.get((form.key, key), form_lines.get(form.key, 1))}"
        return f"line {form_lines.get(form.key, 1)}"
    return "line 1"


def require_sound(protocol: Protocol) -> Protocol:
    """Return ``protocol`` when it passes the loader's checks; raise ProtocolError otherwise."""
    problems = check_protocol(protocol)
    if problems:
        raise ProtocolError(
            f"protocol {protocol.id} has {len(problems)} problem(s)", problems=problems
        )
    return protocol


def build_protocol(
    forms: list[dict[str, Any]],
    schedule: list[dict[str, Any]] | None,
    study: dict[str, Any] | None,
    protocol_id: str | None,
    title: str | None,
    report: ImportReport,
) -> Protocol | None:
    """Return a protocol from mapped forms (ODM metadata import); problems go to ``report``.

    ``study`` (the study-level definition a ductal export carries) and ``schedule`` restore the
    original; without them a minimal definition is assumed and the report says so.
    """
    usable = [f for f in forms if f.get("fields")]
    if not usable:
        report.error("metadata", "", "no form could be imported")
        return None
    if study is not None and schedule is not None:
        definition = {**study, "schedule": schedule}
        if protocol_id:
            definition["id"] = protocol_id
    else:
        if not protocol_id:
            report.error("metadata", "", "give a protocol id for a file not written by ductal")
            return None
        repeating = {f["key"] for f in usable if f.get("repeating")}
        definition = _default_protocol(protocol_id, title or protocol_id, usable, repeating)
        report.warning(
            "metadata",
            "",
            "no study definition in the file: one arm, the first form as "
            "screening form and the others on one visit were assumed; edit before use",
        )
    definition["forms"] = usable
    try:
        protocol = Protocol.model_validate(definition)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False):
            path = ".".join(str(p) for p in err["loc"])
            report.error("metadata", path, str(err["msg"]).removeprefix("Value error, "))
        return None
    for problem in check_protocol(protocol):
        if study is None and problem.field.startswith("response."):
            report.warning("metadata", problem.field, f"{problem.message} (response criteria)")
        else:
            report.error("metadata", problem.field, problem.message)
    return protocol
