"""Statistical packages: tidy tables with labels as SAS XPORT, SPSS, Stata and R-ready CSV.

Any DataFrame with a :class:`Codebook` (variable labels, value labels) can be written, so the
same writers serve the raw forms (:func:`form_tables`, one tidy table per form keyed by subject,
event and instance, or wide on request) and the analysis dataset built by
:mod:`ductal.outcomes`.

Categorical answers are stored as small integers with value labels, as SPSS and Stata expect
(Stata allows value labels only on integers): a choice field's codes are numbered 1, 2, … in the
protocol's order, yes/no is 1/0, and each ticked option of a multiple-choice field is its own 0/1
variable ``<field>__<code>``. The codebook keeps each number's ductal code. SAS transport files
cannot hold value labels, so a ``formats.sas`` program (PROC FORMAT plus the FORMAT statements)
is written beside them. The R-ready CSV keeps the codes as text and comes with a codebook CSV.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ductal.exchange.study_data import SubjectData
from ductal.protocols.model import Protocol

__all__ = ["KEYS", "Codebook", "StatFormat", "form_tables", "write_tables"]

StatFormat = Literal["sas", "spss", "stata", "csv"]
KEYS = ("study_id", "site", "arm", "event", "event_instance", "instance")
_KEY_LABELS = {
    "study_id": "Study id",
    "site": "Site",
    "arm": "Treatment arm",
    "event": "Visit (event)",
    "event_instance": "Occurrence of the visit",
    "instance": "Instance of the form",
    "form_status": "Form status",
}
_NAME_LIMIT = {"sas": 32, "spss": 64, "stata": 28, "csv": 10_000}  # label set = name + index
_LABEL_LIMIT = {"sas": 256, "spss": 256, "stata": 80, "csv": 10_000}


@dataclass
class Codebook:
    """Labels of a table: per variable a label, per categorical variable its value labels.

    ``codes`` keeps, for a categorical variable stored as numbers, the original code of each
    number (the R CSV writes those codes instead of the numbers).
    """

    label: str = ""
    variable_labels: dict[str, str] = field(default_factory=dict)
    value_labels: dict[str, dict[int, str]] = field(default_factory=dict)
    codes: dict[str, dict[int, str]] = field(default_factory=dict)


def _as_date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


def _as_datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


def form_tables(
    protocol: Protocol, subjects: Iterable[SubjectData], *, wide: bool = False
) -> dict[str, tuple[pd.DataFrame, Codebook]]:
    """Return one tidy table per form (rows: subject × event × occurrence × instance).

    With ``wide`` each table has one row per subject and a column per variable and occurrence
    (``<variable>_<event>_<occurrence>_<instance>``, shortened where needed by the writers).
    """
    rows: dict[str, list[dict[str, Any]]] = {f.key: [] for f in protocol.forms}
    for subject in subjects:
        for fd in subject.forms:
            if fd.form not in rows:
                continue
            rows[fd.form].append(
                {
                    "study_id": subject.study_id,
                    "site": subject.site,
                    "arm": subject.arm,
                    "event": fd.event,
                    "event_instance": fd.event_instance,
                    "instance": fd.instance,
                    "form_status": fd.status,
                    **fd.data,
                }
            )
    tables: dict[str, tuple[pd.DataFrame, Codebook]] = {}
    for form in protocol.forms:
        book = Codebook(label=form.title.en, variable_labels=dict(_KEY_LABELS))
        columns: dict[str, list[Any]] = {k: [] for k in (*KEYS, "form_status")}
        records = rows[form.key]
        for record in records:
            for key in (*KEYS, "form_status"):
                columns[key].append(record.get(key))
        for f in form.fields:
            label = f.label.en + (f" ({f.unit})" if f.unit else "")
            values = [r.get(f.key) for r in records]
            if f.type == "multi_choice":
                for choice in f.choices:
                    name = f"{f.key}__{choice.code}"
                    columns[name] = [None if v is None else int(choice.code in v) for v in values]
                    book.variable_labels[name] = f"{label}: {choice.label.en}"
                    book.value_labels[name] = {0: "No", 1: "Yes"}
                    book.codes[name] = {0: "0", 1: "1"}
                continue
            if f.type == "choice":
                numbers = {c.code: i for i, c in enumerate(f.choices, start=1)}
                columns[f.key] = [None if v is None else numbers.get(v) for v in values]
                book.value_labels[f.key] = {i: c.label.en for i, c in enumerate(f.choices, 1)}
                book.codes[f.key] = {i: c.code for i, c in enumerate(f.choices, 1)}
            elif f.type == "yes_no":
                columns[f.key] = values
                book.value_labels[f.key] = {0: "No", 1: "Yes"}
                book.codes[f.key] = {0: "0", 1: "1"}
            elif f.type == "date":
                columns[f.key] = [_as_date(v) for v in values]
            elif f.type == "datetime":
                columns[f.key] = [_as_datetime(v) for v in values]
            else:
                columns[f.key] = values
            book.variable_labels[f.key] = label
        frame = pd.DataFrame(columns)
        kinds = {f.key: f.type for f in form.fields}
        for name in frame.columns:
            kind = kinds.get(name)
            whole = kind == "integer" or name in ("event_instance", "instance")
            if whole or name in book.value_labels:
                frame[name] = frame[name].astype("Int64")
            elif kind in ("number", "calc"):
                frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        if wide:
            frame, book = _widen(frame, book)
        tables[form.key] = (frame, book)
    return tables


def _widen(frame: pd.DataFrame, book: Codebook) -> tuple[pd.DataFrame, Codebook]:
    ids = ["study_id", "site", "arm"]
    keys = ["event", "event_instance", "instance"]
    values = [c for c in frame.columns if c not in (*ids, *keys)]
    wide_book = Codebook(label=book.label + " (wide)")
    for name in ids:
        wide_book.variable_labels[name] = book.variable_labels.get(name, name)
    if frame.empty:
        return frame[ids].copy(), wide_book
    out = frame[ids].drop_duplicates("study_id").set_index("study_id")
    pieces = {}
    for (event, occurrence, instance), group in frame.groupby(keys, sort=False):
        group = group.set_index("study_id")
        for name in values:
            column = f"{name}_{event}_{occurrence}_{instance}"
            pieces[column] = group[name]
            base = book.variable_labels.get(name, name)
            wide_book.variable_labels[column] = f"{base} [{event} #{occurrence}, {instance}]"
            if name in book.value_labels:
                wide_book.value_labels[column] = book.value_labels[name]
                wide_book.codes[column] = book.codes[name]
    wide = pd.concat([out, pd.DataFrame(pieces)], axis=1).reset_index()
    return wide, wide_book


# --------------------------------------------------------------------------------------------
# Writers


def _short_names(names: Iterable[str], limit: int) -> dict[str, str]:
    """Return names cut to ``limit`` characters, still unique, valid in every package."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if not re.match(r"[A-Za-z_]", clean):
            clean = f"v_{clean}"
        short = clean[:limit]
        n = 1
        while short.lower() in taken:
            suffix = f"_{n}"
            short = clean[: limit - len(suffix)] + suffix
            n += 1
        taken.add(short.lower())
        out[name] = short
    return out


def _prepare(
    frame: pd.DataFrame, book: Codebook, fmt: StatFormat
) -> tuple[pd.DataFrame, dict[str, str | None], dict[str, dict[int, str]], dict[str, str]]:
    names = _short_names(frame.columns, _NAME_LIMIT[fmt])
    data = frame.rename(columns=names)
    limit = _LABEL_LIMIT[fmt]
    labels: dict[str, str | None] = {
        names[c]: book.variable_labels.get(c, c)[:limit] for c in frame.columns
    }
    value_labels = {
        names[c]: {int(k): v[:limit] for k, v in book.value_labels[c].items()}
        for c in frame.columns
        if c in book.value_labels
    }
    for column in data.columns:
        series = data[column]
        if isinstance(series.dtype, pd.Int64Dtype):
            data[column] = series.astype("float64")  # readstat takes NaN as missing
        elif series.dtype == object and series.map(lambda v: isinstance(v, bool)).any():
            data[column] = series.astype("float64")
    return data, labels, value_labels, names


def _sas_formats(tables: Mapping[str, tuple[pd.DataFrame, Codebook, dict[str, str]]]) -> str:
    lines = [
        "/* Value labels for the ductal transport files: run, then apply per dataset. */",
        "proc format;",
    ]
    formats: dict[tuple[tuple[int, str], ...], str] = {}
    assignments: list[str] = []
    for table, (frame, book, names) in tables.items():
        uses = []
        for column, labels in book.value_labels.items():
            key = tuple(sorted(labels.items()))
            if key not in formats:
                name = f"DF{len(formats) + 1}F"
                formats[key] = name
                body = " ".join(f"{k}='{v.replace(chr(39), chr(39) * 2)}'" for k, v in key)
                lines.append(f"  value {name} {body};")
            if column in names:
                uses.append(f"{names[column]} {formats[key]}.")
        if uses:
            assignments.append(f"data {table}; set {table}; format {' '.join(uses)}; run;")
        del frame
    lines.append("run;")
    lines.extend(assignments)
    return "\n".join(lines) + "\n"


def _write_codebook(path: Path, frame: pd.DataFrame, book: Codebook) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variable", "label", "type", "value", "value_label"])
        for column in frame.columns:
            kind = str(frame[column].dtype)
            label = book.variable_labels.get(column, "")
            codes = book.codes.get(column)
            if codes:
                for number, code in codes.items():
                    writer.writerow(
                        [column, label, "code", code, book.value_labels[column][number]]
                    )
            else:
                writer.writerow([column, label, kind, "", ""])


def _csv_frame(frame: pd.DataFrame, book: Codebook) -> pd.DataFrame:
    out = frame.copy()
    for column, codes in book.codes.items():
        if column in out.columns:
            out[column] = out[column].map(lambda v, c=codes: c.get(int(v)) if pd.notna(v) else None)
    return out


def write_tables(
    tables: Mapping[str, tuple[pd.DataFrame, Codebook]], folder: str | Path, fmt: StatFormat
) -> list[Path]:
    """Write each table (``name`` → DataFrame and codebook) into ``folder`` as ``fmt``.

    Returns the written paths: ``<name>.xpt`` (+ ``formats.sas``), ``<name>.sav``,
    ``<name>.dta``, or ``<name>.csv`` + ``<name>_codebook.csv``.
    """
    import pyreadstat

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    sas: dict[str, tuple[pd.DataFrame, Codebook, dict[str, str]]] = {}
    table_names = _short_names(tables, 32 if fmt == "sas" else 64)
    for name, (frame, book) in tables.items():
        stem = table_names[name]
        if fmt == "csv":
            path = out / f"{stem}.csv"
            _csv_frame(frame, book).to_csv(path, index=False, date_format="%Y-%m-%d")
            codebook = out / f"{stem}_codebook.csv"
            _write_codebook(codebook, frame, book)
            paths.extend([path, codebook])
            continue
        data, labels, value_labels, names = _prepare(frame, book, fmt)
        if fmt == "sas":
            path = out / f"{stem}.xpt"
            pyreadstat.write_xport(
                data,
                str(path),
                file_label=book.label[:40],
                column_labels=labels,
                table_name=stem[:32],
                file_format_version=8,
            )
            sas[stem] = (
                data,
                Codebook(
                    label=book.label,
                    variable_labels=book.variable_labels,
                    value_labels={names[c]: v for c, v in book.value_labels.items() if c in names},
                ),
                {n: n for n in data.columns},
            )
        elif fmt == "spss":
            path = out / f"{stem}.sav"
            pyreadstat.write_sav(
                data,
                str(path),
                file_label=book.label,
                column_labels=labels,
                variable_value_labels=value_labels,  # type: ignore[arg-type]
            )
        else:
            path = out / f"{stem}.dta"
            pyreadstat.write_dta(
                data,
                str(path),
                file_label=book.label[:80],
                column_labels=labels,
                variable_value_labels=value_labels,  # type: ignore[arg-type]
            )
        paths.append(path)
    if fmt == "sas" and sas:
        formats = out / "formats.sas"
        formats.write_text(_sas_formats(sas), encoding="utf-8")
        paths.append(formats)
    return paths
