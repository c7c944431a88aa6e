"""The procedure record: one ductoscopy session, validated as a whole and saved once.

:func:`save_procedure` checks everything before it writes — the form's own fields and rules
(ranges of the scope, dilators and volumes, end after start), the order of the checklist steps,
the still images' checksums and the day's pre-session checks — and reports every problem at
once. Then, in the caller's transaction, it saves the form (audited), raises the regimen rules'
queries, creates the pending pathology results of the samples taken and, for the first session,
dates the lavage course. Any failure leaves nothing half-saved: the caller's transaction rolls
back as a whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ductal import forms, records
from ductal.errors import NotFound, Problem, ValidationError
from ductal.models import Event, FormRecord, Subject
from ductal.procedure import checks, course, pathology, regimen
from ductal.procedure.rules import Finding, procedure_settings
from ductal.protocols.model import FormDef, ProcedureSettings, Protocol
from ductal.protocols.validation import validate_form_data
from ductal.vault import Vault

_REF = re.compile(r"^sha256:([0-9a-f]{64})$")
IMAGE_FIELDS = ("image_1", "image_2", "image_3")
MAX_IMAGE_BYTES = 20 * 1024 * 1024


# --- still images ---------------------------------------------------------------------------


def store_image(uploads_dir: Path, content: bytes) -> str:
    """Store an image under ``uploads_dir`` named by its SHA-256; return ``'sha256:<hex>'``."""
    if not content:
        raise ValidationError("empty image", problems=[Problem("image", "the file is empty")])
    if len(content) > MAX_IMAGE_BYTES:
        raise ValidationError(
            "image too large", problems=[Problem("image", "must be at most 20 MB")]
        )
    digest = hashlib.sha256(content).hexdigest()
    uploads_dir.mkdir(parents=True, exist_ok=True)
    path = uploads_dir / digest
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(content)
        tmp.replace(path)  # atomic: a reader never sees half a file under the final name
    return f"sha256:{digest}"


def _digest_of(ref: str) -> str:
    match = _REF.match(ref)
    if match is None:
        raise ValidationError(
            "bad image reference",
            problems=[Problem("image", f"{ref!r} is not of the form sha256:<64 hex digits>")],
        )
    return match.group(1)


def read_image(uploads_dir: Path, ref: str) -> bytes:
    """Return the bytes of a stored image after checking they still have their checksum."""
    digest = _digest_of(ref)
    path = uploads_dir / digest
    if not path.exists():
        raise NotFound(f"image {ref} is not in the uploads folder")
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != digest:
        raise ValidationError(
            "image checksum mismatch",
            problems=[Problem("image", f"{ref}: the stored file no longer matches its checksum")],
        )
    return content


def _image_problems(clean: Mapping[str, Any], uploads_dir: Path | None) -> list[Problem]:
    problems: list[Problem] = []
    for key in IMAGE_FIELDS:
        ref = clean.get(key)
        if ref is None:
            continue
        try:
            if uploads_dir is None:
                _digest_of(ref)
            else:
                read_image(uploads_dir, ref)
        except (ValidationError, NotFound) as exc:
            detail = exc.problems[0].message if exc.problems else exc.message
            problems.append(Problem(key, detail))
    return problems


# --- the checklist --------------------------------------------------------------------------


def _moment(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _hhmm(moment: dt.datetime) -> str:
    return moment.strftime("%H:%M")


def step_problems(
    settings: ProcedureSettings, form: FormDef, clean: Mapping[str, Any], *, lang: str = "en"
) -> list[Problem]:
    """Return problems with the checklist: required steps missing, steps out of order or
    outside the start and end times (pure; ``clean`` is validated form data)."""
    problems: list[Problem] = []
    start, end = _moment(clean.get("start_time")), _moment(clean.get("end_time"))
    if start is not None and end is not None and end <= start:
        end = None  # the end time itself is wrong (a form rule says so): judge steps by the start
    previous: tuple[str, dt.datetime] | None = None
    for number, step in enumerate(settings.steps, start=1):
        when = _moment(clean.get(step.field))
        if when is None:
            if step.required:
                problems.append(
                    Problem(step.field, f"is required (step {number} of the checklist)")
                )
            continue
        if start is not None and when < start:
            problems.append(
                Problem(step.field, f"at {_hhmm(when)} is before the start time {_hhmm(start)}")
            )
        if end is not None and when > end:
            problems.append(
                Problem(step.field, f"at {_hhmm(when)} is after the end time {_hhmm(end)}")
            )
        if previous is not None and when < previous[1]:
            label = form.field(previous[0]).label.get(lang)
            problems.append(
                Problem(
                    step.field,
                    f"at {_hhmm(when)} is before the earlier step {label!r} at "
                    f"{_hhmm(previous[1])}: the steps follow the checklist order",
                )
            )
        previous = (step.field, when)
    return problems


def _duct_problems(clean: Mapping[str, Any]) -> list[Problem]:
    positions = clean.get("duct_positions") or []
    cannulated = clean.get("ducts_cannulated")
    if isinstance(cannulated, int) and len(positions) > cannulated:
        return [
            Problem(
                "duct_positions",
                f"{len(positions)} clock positions for {cannulated} cannulated duct(s)",
            )
        ]
    return []


def validate_procedure(
    protocol: Protocol,
    data: Mapping[str, Any],
    *,
    context: Mapping[str, Any] | None = None,
    today: dt.date | None = None,
    uploads_dir: Path | None = None,
    lang: str = "en",
) -> tuple[dict[str, Any], list[Problem]]:
    """Return the cleaned procedure record and every problem with it (nothing is stored)."""
    settings = procedure_settings(protocol)
    form = protocol.form(settings.record_form)
    clean, problems = validate_form_data(form, data, context=context, today=today, lang=lang)
    failed = {p.field for p in problems}
    extra = step_problems(settings, form, clean, lang=lang)
    extra += _duct_problems(clean)
    extra += _image_problems(clean, uploads_dir)
    problems += [p for p in extra if p.field not in failed]
    return clean, problems


# --- the service ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcedureOutcome:
    """What saving a procedure did: the record, its rule findings and what it set in motion."""

    record: FormRecord
    findings: list[Finding]
    checks: checks.CheckReport | None
    pending_results: list[Event] = field(default_factory=list)
    course_dates: list[tuple[int, dt.date]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record_id": self.record.id,
            "status": self.record.status,
            "version": self.record.version,
            "findings": [f.to_dict() for f in self.findings],
            "checks": self.checks.to_dict() if self.checks else None,
            "pending_results": [
                {
                    "instance": e.instance,
                    "due": e.scheduled_on.isoformat() if e.scheduled_on else None,
                }
                for e in self.pending_results
            ],
            "course_dates": [(i, d.isoformat()) for i, d in self.course_dates],
        }


def save_procedure(
    session: Session,
    *,
    subject: Subject,
    data: Mapping[str, Any],
    actor: str,
    record_id: int | None = None,
    expected_version: int | None = None,
    reason: str | None = None,
    uploads_dir: Path | None = None,
    vault: Vault | None = None,
    today: dt.date | None = None,
    lang: str = "en",
) -> ProcedureOutcome:
    """Validate and save a ductoscopy procedure record; return what it did.

    A new record (no ``record_id``) is a session being started: the day's pre-session checks
    must leave no blocking check open (Conflict otherwise). Editing a saved record needs its
    ``record_id``, ``expected_version`` and a ``reason``, as every change to saved data does.
    """
    protocol = records.subject_protocol(subject)
    settings = procedure_settings(protocol)
    context = forms.validation_context(session, subject, vault)
    clean, problems = validate_procedure(
        protocol, data, context=context, today=today, uploads_dir=uploads_dir, lang=lang
    )
    if problems:
        raise ValidationError(f"procedure record has {len(problems)} problem(s)", problems=problems)
    day = dt.date.fromisoformat(clean["procedure_date"])
    existing: FormRecord | None = None
    if record_id is not None:
        existing = session.get(FormRecord, record_id)
        if (
            existing is None
            or existing.subject_id != subject.id
            or existing.form_key != settings.record_form
        ):
            raise NotFound(f"no procedure record {record_id} for {subject.study_id}")
    report = (
        None
        if existing is not None
        else checks.require_may_start(session, subject=subject, day=day)
    )
    event_key = checks.treatment_event(protocol, settings.record_form)
    instance: int | None = None
    if existing is not None:
        event = session.get(Event, existing.event_id)
        assert event is not None
        event_instance, instance = event.instance, existing.instance
        old = dict(existing.data)
    first = course.recorded_sessions(session, subject) == [] and settings.course is not None
    if existing is None:
        # the first session opens the course: it is the first visit, whatever enrolment planned
        event_instance = (
            1 if first else checks.session_event_instance(session, subject, event_key, day)
        )
        instance = None
        old = {}
    record = forms.save_form(
        session,
        subject=subject,
        form_key=settings.record_form,
        data=data,
        actor=actor,
        event_key=event_key,
        event_instance=event_instance,
        instance=instance,
        expected_version=expected_version,
        reason=reason,
        vault=vault,
        today=today,
    )
    findings = regimen.check_record(session, record=record, actor=actor, lang=lang)
    pending: list[Event] = []
    for flag, sample in (("biopsy_taken", "biopsy"), ("cytology_taken", "cytology")):
        if record.data.get(flag) == 1 and old.get(flag) != 1:
            pending.append(
                pathology.request_result(
                    session,
                    subject=subject,
                    sample_type=sample,
                    sample_date=day,
                    actor=actor,
                    source_record_id=record.id,
                )
            )
    dates: list[tuple[int, dt.date]] = []
    if first:
        dates = course.schedule_course(session, subject=subject, first_session=day, actor=actor)
    return ProcedureOutcome(record, findings, report, pending, dates)


@dataclass(frozen=True)
class LavageOutcome:
    """What saving a lavage course session did: the record, rule findings, course dates."""

    record: FormRecord
    findings: list[Finding]
    checks: checks.CheckReport | None
    course_dates: list[tuple[int, dt.date]] = field(default_factory=list)


def save_lavage_session(
    session: Session,
    *,
    subject: Subject,
    data: Mapping[str, Any],
    actor: str,
    event_instance: int | None = None,
    vault: Vault | None = None,
    today: dt.date | None = None,
    lang: str = "en",
) -> LavageOutcome:
    """Save a new ``lavage_session`` record (an infusion or a massage visit of the course).

    An infusion is a session being started, so the day's pre-session checks must leave no
    block open, as for a ductoscopy. The regimen rules raise their queries, and the first
    session of the course dates the course.
    """
    protocol = records.subject_protocol(subject)
    settings = procedure_settings(protocol)
    course_def = settings.course
    if course_def is None:
        raise NotFound(f"protocol {protocol.id} defines no lavage course")
    form = protocol.form(course_def.form)
    context = forms.validation_context(session, subject, vault)
    clean, problems = validate_form_data(form, data, context=context, today=today, lang=lang)
    if problems:
        raise ValidationError(f"form {form.key} has {len(problems)} problem(s)", problems=problems)
    day = dt.date.fromisoformat(clean[course_def.date_field])
    report = None
    if clean.get(course_def.field) == course_def.steps[0].code:
        report = checks.require_may_start(session, subject=subject, day=day)
    first = course.recorded_sessions(session, subject) == []
    # the first session opens the course: it is the first visit, whatever enrolment planned
    instance = event_instance or (
        1 if first else checks.session_event_instance(session, subject, course_def.event, day)
    )
    record = forms.save_form(
        session,
        subject=subject,
        form_key=course_def.form,
        data=data,
        actor=actor,
        event_key=course_def.event,
        event_instance=instance,
        vault=vault,
        today=today,
    )
    findings = regimen.check_record(session, record=record, actor=actor, lang=lang)
    dates: list[tuple[int, dt.date]] = []
    if first:
        dates = course.schedule_course(session, subject=subject, first_session=day, actor=actor)
    return LavageOutcome(record, findings, report, dates)
