"""REDCap records: ductal's form records as REDCap's flat CSV, and that CSV back in.

Layout (as REDCap's "raw" export of a longitudinal project with repeating instruments):
``record_id, redcap_event_name, redcap_repeat_instrument, redcap_repeat_instance,
redcap_data_access_group``, then each instrument's variables (a checkbox as one ``field___code``
column per option) followed by ``<form>_complete``. One row holds the non-repeating instruments of
one event; each instance of a repeating instrument has its own row.

Mapping decisions:

* A ductal event that repeats (the lavage course) becomes one REDCap event per occurrence,
  ``lavage_1_arm_1``, ``lavage_2_arm_1``, …, because REDCap cannot repeat an instrument inside a
  repeating event; other events are ``<event>_arm_1``.
* ductal's treatment arm is a field (``ductal_arm``, as REDCap's randomisation module stores an
  allocation), so every record uses REDCap arm 1. The site is the data access group.
* ``<form>_complete`` is 0 for an incomplete record and 2 otherwise; verification, locking and
  signatures are not form data and travel in the ODM export's audit records instead.
* Values are REDCap raw values: dates ``YYYY-MM-DD``, date-times ``YYYY-MM-DD HH:MM:SS`` (UTC),
  yes/no 1/0, choice codes, numbers with exactly the declared decimals.

Import validates every row first (code lists, date formats, ranges, rules: each problem with its
row) and then writes through :mod:`ductal.records` — screen, enrol, save_form, change_status —
so imported data is validated and audited like data entered by hand, in the caller's single
transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from sqlalchemy.orm import Session

from ductal.exchange.importing import Located, write_subjects
from ductal.exchange.redcap_dictionary import SUBJECT_FIELDS, SUBJECT_FORM, variable_names
from ductal.exchange.report import ImportReport
from ductal.exchange.study_data import FormData, SubjectData
from ductal.models import SUBJECT_STATUSES
from ductal.protocols.model import FieldDef, FormDef, Protocol, ScheduledEvent
from ductal.protocols.validation import coerce_value

__all__ = [
    "FIXED_COLUMNS",
    "RecordsLayout",
    "import_records",
    "read_records",
    "records_csv",
    "write_records",
]

FIXED_COLUMNS = (
    "record_id",
    "redcap_event_name",
    "redcap_repeat_instrument",
    "redcap_repeat_instance",
    "redcap_data_access_group",
)
_ARM = "_arm_1"
_SUBJECT_VALUE_FIELDS = SUBJECT_FIELDS[1:]


def dag_name(site: str) -> str:
    """Return REDCap's unique data access group name for a site code."""
    return site.strip().lower().replace("-", "_")


def site_code(dag: str) -> str:
    """Return the ductal site code of a data access group name."""
    return dag.strip().upper().replace("_", "-")


class _Column:
    """How one form field maps onto CSV columns."""

    __slots__ = ("columns", "decimals", "field", "kind", "name")

    def __init__(self, field: FieldDef, name: str) -> None:
        self.field = field
        self.name = name
        self.kind = field.type
        self.decimals = field.decimals if field.type == "number" else None
        if field.type == "multi_choice":
            # REDCap names checkbox columns with the code in lower case, other characters as _
            self.columns = [
                f"{name}___{re.sub(r'[^a-z0-9_]', '_', c.code.lower())}" for c in field.choices
            ]
        else:
            self.columns = [name]


class RecordsLayout:
    """The column layout and event names of a protocol's REDCap records CSV."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        names = variable_names(protocol)
        self.forms: dict[str, list[_Column]] = {
            form.key: [_Column(f, names[(form.key, f.key)]) for f in form.fields]
            for form in protocol.forms
        }
        header = [*FIXED_COLUMNS, *_SUBJECT_VALUE_FIELDS, f"{SUBJECT_FORM}_complete"]
        self.position: dict[str, dict[str, int]] = {}
        for form in protocol.forms:
            start = len(header)
            for column in self.forms[form.key]:
                header.extend(column.columns)
            header.append(f"{form.key}_complete")
            self.position[form.key] = {"start": start, "complete": len(header) - 1}
        self.header = header
        self.index = {name: i for i, name in enumerate(header)}
        self.screening_event = next(
            (e for e in protocol.schedule if e.kind == "screening"), protocol.schedule[0]
        )
        self._events: dict[str, tuple[ScheduledEvent, int]] = {}
        for event in protocol.schedule:
            self._events[f"{event.key}{_ARM}"] = (event, 1)
            if event.repeat is not None:
                for i in range(1, event.repeat.count + 1):
                    self._events[f"{event.key}_{i}{_ARM}"] = (event, i)
        self.repeating = {f.key for f in protocol.forms if f.repeating}
        self.event_order = {e.key: i for i, e in enumerate(protocol.schedule)}
        self.form_order = {f.key: i for i, f in enumerate(protocol.forms)}

    def sort_key(self, fd: FormData) -> tuple[int, int, int, int]:
        """Return the order REDCap lists rows in: event, occurrence, instrument, instance."""
        return (
            self.event_order.get(fd.event, len(self.event_order)),
            fd.event_instance,
            self.form_order.get(fd.form, 0) if fd.form in self.repeating else -1,
            fd.instance,
        )

    def event_name(self, event: ScheduledEvent, instance: int) -> str:
        """Return the REDCap unique event name of an event occurrence."""
        if event.repeat is not None or instance != 1:
            return f"{event.key}_{instance}{_ARM}"
        return f"{event.key}{_ARM}"

    def parse_event(self, name: str) -> tuple[ScheduledEvent, int] | None:
        """Return the event and occurrence of a REDCap event name (None when unknown)."""
        found = self._events.get(name)
        if found is not None:
            return found
        if not name.endswith(_ARM):
            return None
        stem, _, number = name.removesuffix(_ARM).rpartition("_")
        if number.isdigit() and int(number) >= 1:
            try:
                return self.protocol.event(stem), int(number)
            except KeyError:
                return None
        return None


# --------------------------------------------------------------------------------------------
# Export


def _value(column: _Column, value: Any) -> str:
    kind = column.kind
    if kind == "number" and column.decimals is not None and 1 <= column.decimals <= 4:
        return f"{value:.{column.decimals}f}"
    if kind == "datetime":
        return str(value).replace("T", " ").removesuffix("Z")
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _subject_row(layout: RecordsLayout, subject: SubjectData) -> list[str]:
    row = [""] * len(layout.header)
    row[0] = subject.study_id
    row[1] = layout.event_name(layout.screening_event, 1)
    row[4] = dag_name(subject.site)
    values = (
        subject.site,
        subject.arm,
        subject.stratum,
        subject.status,
        subject.status_reason,
        subject.screened_on,
        subject.enrolled_on,
    )
    for offset, value in enumerate(values):
        row[5 + offset] = "" if value is None else value
    row[5 + len(values)] = "2"
    return row


def subject_rows(layout: RecordsLayout, subject: SubjectData) -> list[list[str]]:
    """Return the CSV rows of one subject (the subject row first, then events in order)."""
    rows: dict[tuple[str, str, int], list[str]] = {}
    first = _subject_row(layout, subject)
    rows[(first[1], "", 0)] = first
    width = len(layout.header)
    for fd in sorted(subject.forms, key=layout.sort_key):
        event = layout.protocol.event(fd.event)
        name = layout.event_name(event, fd.event_instance)
        repeating = fd.form in layout.repeating or fd.instance != 1
        key = (name, fd.form if repeating else "", fd.instance if repeating else 0)
        row = rows.get(key)
        if row is None:
            row = [""] * width
            row[0] = subject.study_id
            row[1] = name
            if repeating:
                row[2] = fd.form
                row[3] = str(fd.instance)
            row[4] = dag_name(subject.site)
            rows[key] = row
        position = layout.position[fd.form]
        i = position["start"]
        data = fd.data
        for column in layout.forms[fd.form]:
            value = data.get(column.field.key)
            if column.kind == "multi_choice":
                ticked = set(value or ())
                for choice in column.field.choices:
                    row[i] = "1" if choice.code in ticked else "0"
                    i += 1
                continue
            if value is not None:
                row[i] = _value(column, value)
            i += 1
        row[position["complete"]] = "0" if fd.status == "incomplete" else "2"
    return list(rows.values())


def write_records(
    protocol: Protocol,
    subjects: Iterable[SubjectData],
    stream: TextIO,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the records CSV of ``subjects`` to ``stream``; return the number of subjects.

    Streaming: one subject is held at a time. ``progress`` is called with 1 per subject.
    """
    layout = RecordsLayout(protocol)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(layout.header)
    count = 0
    for subject in subjects:
        writer.writerows(subject_rows(layout, subject))
        count += 1
        if progress is not None:
            progress(1)
    return count


def records_csv(protocol: Protocol, subjects: Iterable[SubjectData]) -> str:
    """Return the records CSV of ``subjects`` as text."""
    out = io.StringIO()
    write_records(protocol, subjects, out)
    return out.getvalue()


# --------------------------------------------------------------------------------------------
# Import: parse and validate


def _blank_row(values: list[str], start: int, stop: int) -> bool:
    return not any(v.strip() for v in values[start:stop])


def read_records(
    protocol: Protocol,
    text: str,
    report: ImportReport,
    *,
    today: dt.date | None = None,
    row_ids: dict[int, str] | None = None,
) -> list[Located]:
    """Return the subjects in a records CSV, checking every value; problems go to ``report``.

    Each value is checked against its field (type, code list, date format, range, rules) as
    :func:`ductal.protocols.validation.validate_form_data` does; problems name the row and the
    REDCap variable.
    """
    layout = RecordsLayout(protocol)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        report.error("row 1", "", "the file is empty")
        return []
    except csv.Error as exc:
        report.error("row 1", "", f"not a CSV file: {exc}")
        return []
    if not header or not header[0]:
        report.error("row 1", "", "the first column must be the record id")
        return []
    where_in = {name: i for i, name in enumerate(header)}
    for name in header[1:]:
        if name not in layout.index:
            report.warning("row 1", name, "unknown column, ignored")
    has_events = "redcap_event_name" in where_in
    plans = {form.key: _FormPlan(layout, form, where_in) for form in protocol.forms}
    subjects: dict[str, Located] = {}
    seen_rows: dict[tuple[str, str, str, str], int] = {}
    try:
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if row_ids is not None:
                row_ids[line] = values[0].strip()
            if len(values) != len(header):
                report.error(f"row {line}", "", f"{len(values)} cells for {len(header)} columns")
                continue
            _read_row(
                layout,
                plans,
                header,
                where_in,
                values,
                line,
                has_events,
                subjects,
                seen_rows,
                report,
                today,
            )
    except csv.Error as exc:
        report.error(f"row {reader.line_num}", "", f"broken CSV: {exc}")
    return list(subjects.values())


def _cell(values: list[str], where_in: dict[str, int], name: str) -> str:
    i = where_in.get(name)
    return values[i].strip() if i is not None else ""


def _read_row(
    layout: RecordsLayout,
    plans: dict[str, _FormPlan],
    header: list[str],
    where_in: dict[str, int],
    values: list[str],
    line: int,
    has_events: bool,
    subjects: dict[str, Located],
    seen_rows: dict[tuple[str, str, str, str], int],
    report: ImportReport,
    today: dt.date | None,
) -> None:
    protocol = layout.protocol
    where = f"row {line}"
    record_id = values[0].strip()
    if not record_id:
        report.error(where, header[0], "blank record id")
        return
    event_name = _cell(values, where_in, "redcap_event_name")
    instrument = _cell(values, where_in, "redcap_repeat_instrument")
    instance_text = _cell(values, where_in, "redcap_repeat_instance")
    key = (record_id, event_name, instrument, instance_text)
    if key in seen_rows:
        report.error(where, record_id, f"repeats row {seen_rows[key]} (same event and instance)")
        return
    seen_rows[key] = line
    event: ScheduledEvent | None = None
    occurrence = 1
    unknown_event = ""
    if has_events:
        parsed = layout.parse_event(event_name)
        if parsed is None:
            unknown_event = event_name or "<blank>"  # placed by form below, if unambiguous
        else:
            event, occurrence = parsed
    instance = 1
    if instance_text:
        if not instance_text.isdigit() or int(instance_text) < 1:
            report.error(where, "redcap_repeat_instance", f"{instance_text!r} is not 1, 2, ...")
            return
        instance = int(instance_text)
    if instrument and instrument not in layout.forms:
        report.error(where, "redcap_repeat_instrument", f"unknown instrument {instrument!r}")
        return
    located = subjects.get(record_id)
    if located is None:
        located = Located(SubjectData(study_id=record_id, site="", status=""), line, {})
        subjects[record_id] = located
    subject = located.subject
    dag = _cell(values, where_in, "redcap_data_access_group")
    if dag and not subject.site:
        subject.site = site_code(dag)
    if not instrument:
        _read_subject_fields(values, where_in, subject, where, report)
        arms = [a.key for a in protocol.arms]
        if subject.arm is not None and subject.arm not in arms:
            report.error(where, "ductal_arm", f"{subject.arm!r} is not one of {', '.join(arms)}")
    forms = [instrument] if instrument else [f.key for f in protocol.forms if not f.repeating]
    for form_key in forms:
        plan = plans[form_key]
        complete_text = values[plan.complete].strip() if plan.complete >= 0 else ""
        if not any(values[i] for i in plan.used) and complete_text in ("", "0"):
            continue
        spec = event
        if spec is None:
            candidates = [e for e in protocol.schedule if form_key in e.forms]
            if len(candidates) != 1:
                if unknown_event:
                    report.error(where, "redcap_event_name", f"unknown event {unknown_event!r}")
                else:
                    report.error(where, form_key, "say which event (add redcap_event_name)")
                continue
            spec = candidates[0]
            if unknown_event:
                report.warning(
                    where,
                    "redcap_event_name",
                    f"event {unknown_event!r} is not in the protocol; {form_key} is put at "
                    f"its only event {spec.key!r}",
                )
        if form_key not in spec.forms:
            report.error(where, form_key, f"is not collected at event {spec.key!r}")
            continue
        if complete_text not in ("", "0", "1", "2"):
            report.error(where, f"{form_key}_complete", f"{complete_text!r} is not 0, 1 or 2")
            continue
        status = "incomplete" if complete_text == "0" else "complete"
        clean = _form_values(plan, values, where, report)
        fd = FormData(
            event=spec.key,
            event_instance=occurrence,
            form=form_key,
            instance=instance,
            status=status,
            data=clean,
        )
        subject.forms.append(fd)
        located.form_lines[id(fd)] = line


def _read_subject_fields(
    values: list[str],
    where_in: dict[str, int],
    subject: SubjectData,
    where: str,
    report: ImportReport,
) -> None:
    cells = {name: _cell(values, where_in, name) for name in _SUBJECT_VALUE_FIELDS}
    if not any(cells.values()):
        return
    if cells["ductal_site"]:
        subject.site = cells["ductal_site"]
    subject.arm = cells["ductal_arm"] or None
    subject.stratum = cells["ductal_stratum"] or None
    status = cells["ductal_status"]
    if status and status not in SUBJECT_STATUSES:
        report.error(
            where, "ductal_status", f"{status!r} is not one of {', '.join(SUBJECT_STATUSES)}"
        )
    else:
        subject.status = status
    subject.status_reason = cells["ductal_status_reason"] or None
    for name, attr in (
        ("ductal_screened_on", "screened_on"),
        ("ductal_enrolled_on", "enrolled_on"),
    ):
        text = cells[name]
        if not text:
            continue
        try:
            setattr(subject, attr, dt.date.fromisoformat(text).isoformat())
        except ValueError:
            report.error(where, name, f"{text!r} is not a date (YYYY-MM-DD)")


class _FormPlan:
    """Where each field of one form is in the header, found once per file."""

    __slots__ = ("columns", "complete", "used")

    def __init__(self, layout: RecordsLayout, form: FormDef, where_in: dict[str, int]) -> None:
        self.columns: list[tuple[_Column, list[int]]] = []
        for column in layout.forms[form.key]:
            if column.kind == "calc":
                continue  # computed again when saved
            self.columns.append((column, [where_in.get(name, -1) for name in column.columns]))
        self.used = [i for _, idx in self.columns for i in idx if i >= 0]
        self.complete = where_in.get(f"{form.key}_complete", -1)


def _form_values(
    plan: _FormPlan, values: list[str], where: str, report: ImportReport
) -> dict[str, Any]:
    """Return the form's values in storage types; each bad value is reported on its column.

    Values are checked one by one here (type, date format, code list, range); branching,
    required answers and cross-field rules are checked when the form is saved through the
    records service, with the same row numbers.
    """
    data: dict[str, Any] = {}
    for column, indices in plan.columns:
        definition = column.field
        if column.kind == "multi_choice":
            ticked = []
            for choice, name, i in zip(definition.choices, column.columns, indices, strict=True):
                cell = values[i].strip() if i >= 0 else ""
                if cell == "1":
                    ticked.append(choice.code)
                elif cell not in ("", "0"):
                    report.error(
                        where,
                        name,
                        f"{cell!r} is not 0 or 1 (checkbox)",
                    )
            if ticked:
                data[definition.key] = ticked
            continue
        i = indices[0]
        cell = values[i].strip() if i >= 0 else ""
        if not cell:
            continue
        try:
            value = coerce_value(definition, cell)
        except ValueError as exc:
            report.error(where, column.name, str(exc))
            continue
        if column.kind in ("integer", "number"):
            if definition.min is not None and value < definition.min:
                report.error(where, column.name, f"must be at least {definition.min:g}")
                continue
            if definition.max is not None and value > definition.max:
                report.error(where, column.name, f"must be at most {definition.max:g}")
                continue
        data[definition.key] = value
    return data


def import_records(
    session: Session,
    *,
    protocol: Protocol,
    text: str,
    actor: str,
    partial: bool = False,
    today: dt.date | None = None,
    source: str = "records CSV",
    progress: Callable[[int], None] | None = None,
    default_site: str | None = None,
) -> ImportReport:
    """Import a REDCap records CSV into ``protocol`` (registered) in the caller's transaction.

    Every row is checked first; without ``partial`` any problem raises a ValidationError listing
    them all and nothing is written. With ``partial`` each subject is written in a savepoint:
    subjects with a problem are left out and listed. Subjects must be new (their record id is
    their study id); their site (the data access group) must exist.
    """
    report = ImportReport(source=source)
    row_ids: dict[int, str] = {}
    located = read_records(protocol, text, report, today=today, row_ids=row_ids)
    bad_lines = {int(i.where.split()[1]) for i in report.errors if i.where.startswith("row ")}
    bad_ids = {row_ids[n] for n in bad_lines if n in row_ids}
    return write_subjects(
        session,
        protocol=protocol,
        located=located,
        report=report,
        actor=actor,
        partial=partial,
        bad_ids=bad_ids,
        today=today,
        progress=progress,
        source_name="REDCap",
        default_site=default_site,
    )
