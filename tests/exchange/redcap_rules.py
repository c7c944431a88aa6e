"""REDCap's own acceptance rules for a data dictionary, written down as an independent check.

These follow REDCap's documentation of the data dictionary upload (variable names, instrument
contiguity, choices, validation types, branching logic references); the exporter must pass them.
"""

from __future__ import annotations

import csv
import io
import re

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
CHOICE_CODE = re.compile(r"^-?[A-Za-z0-9_]+$")
VALIDATIONS = {
    "",
    "date_ymd",
    "date_mdy",
    "date_dmy",
    "datetime_ymd",
    "datetime_seconds_ymd",
    "integer",
    "number",
    "number_1dp",
    "number_2dp",
    "number_3dp",
    "number_4dp",
    "email",
    "phone",
    "time",
    "zipcode",
    "alpha_only",
}
TYPES = {
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
}
REF = re.compile(r"\[([a-z][a-z0-9_]*)(?:\(([A-Za-z0-9_]+)\))?\]")


def redcap_problems(text: str) -> list[str]:
    """Return every reason REDCap would refuse the dictionary ``text`` (empty: accepted)."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    problems: list[str] = []
    if len(header) != 18:
        problems.append(f"{len(header)} columns, not 18")
    names = [r[0] for r in body]
    if names[0] != "record_id":
        problems.append("the first field is not the record id")
    seen: set[str] = set()
    finished: set[str] = set()
    current = None
    checkbox_codes: dict[str, set[str]] = {}
    for r in body:
        name, form, kind, choices, validation = r[0], r[1], r[3], r[5], r[7]
        if not NAME.match(name) or len(name) > 100:
            problems.append(f"bad variable name {name!r}")
        if name in seen:
            problems.append(f"duplicate variable {name}")
        seen.add(name)
        if form != current:
            if form in finished:
                problems.append(f"instrument {form} is not contiguous")
            if current is not None:
                finished.add(current)
            current = form
        if not NAME.match(form):
            problems.append(f"bad form name {form!r}")
        if any(len(cell.encode()) > 65_535 for cell in r):
            problems.append(f"{name}: a cell is longer than REDCap's 65,535-byte text column")
        if kind not in TYPES:
            problems.append(f"{name}: unknown type {kind}")
        if kind == "text" and validation not in VALIDATIONS:
            problems.append(f"{name}: unknown validation {validation}")
        if kind in ("radio", "dropdown", "checkbox"):
            codes = set()
            for part in choices.split("|"):
                code, sep, label = part.strip().partition(",")
                if not sep or not CHOICE_CODE.match(code.strip()) or not label.strip():
                    problems.append(f"{name}: bad choice {part!r}")
                codes.add(code.strip())
            if kind == "checkbox":
                checkbox_codes[name] = codes
        if kind != "calc" and kind not in ("radio", "dropdown", "checkbox", "slider") and choices:
            problems.append(f"{name}: choices on a {kind} field")
    for r in body:
        for column in (r[5] if r[3] == "calc" else "", r[11]):
            for ref, code in REF.findall(column):
                if ref not in seen:
                    problems.append(f"{r[0]}: logic refers to unknown variable {ref}")
                elif code and code not in checkbox_codes.get(ref, set()):
                    problems.append(f"{r[0]}: [{ref}({code})] is not a checkbox option")
    return problems
