"""Pages: the ductoscopy / lavage procedure — checks and override, the procedure record with live
regimen feedback and still images, lavage sessions, course, pathology results, printing.

Each page calls ``ductal.procedure`` through the same helpers as the REST API
(:mod:`ductal.web.api.procedure`); a refused save re-renders the form with the user's own values
and every problem beside its field.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from ductal import records
from ductal.errors import DuctalError, Problem, ValidationError
from ductal.models import FormRecord
from ductal.procedure import checks, course, pathology, record, report
from ductal.procedure.rules import max_minutes, procedure_settings
from ductal.protocols.model import FormDef, Protocol
from ductal.web import views
from ductal.web.api import procedure as service
from ductal.web.api.procedure import SubjectOverrider
from ductal.web.deps import (
    Config,
    DbSession,
    FormFields,
    RecordViewer,
    RowId,
    SubjectAccess,
    SubjectEditor,
    SubjectViewer,
    Viewer,
)
from ductal.web.pages._render import first, render

router = APIRouter(include_in_schema=False)

_HHMM = re.compile(r"^\d{1,2}:\d{2}$")

# how the ductoscopy form is laid out on the page; fields not named here go under "other"
SECTIONS: list[tuple[str, list[str]]] = [
    ("session", ["procedure_date", "operator", "side", "start_time", "end_time"]),
    (
        "equipment",
        [
            "ducts_identified",
            "ducts_cannulated",
            "duct_positions",
            "scope_diameter_mm",
            "magnification",
        ],
    ),
    ("checklist", []),  # filled from the protocol's steps, in checklist order
    ("anaesthesia", ["anaesthesia"]),
    (
        "irrigation",
        [
            "irrigation_volume_ml",
            "lidocaine_percent",
            "steroid_agent",
            "steroid_dose_mg",
            "culture",
            "purulent_aspirate",
            "antibiotic_added",
            "antibiotic_agent",
            "antibiotic_mg_per_ml",
        ],
    ),
    (
        "findings",
        [
            "finding",
            "inflammation_features",
            "lesion_type",
            "finding_clock",
            "finding_depth_mm",
            "image_1",
            "image_2",
            "image_3",
        ],
    ),
    ("samples", ["biopsy_taken", "cytology_taken"]),
    ("complications", ["pain_score", "complications", "complication_grade", "notes"]),
]


def _protocol(access: SubjectAccess) -> Protocol:
    return records.subject_protocol(access.subject)


def _date(value: str | None, default: dt.date | None = None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else default
    except ValueError:
        return default


def _by_field(exc: DuctalError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in exc.problems:
        out.setdefault(p.field, []).append(p.message)
    return out


def collect(form: FormDef, submitted: dict[str, list[str]], date_key: str) -> dict[str, Any]:
    """Return the answers of ``form`` from a submitted page; times (HH:MM) are put on the date."""
    from ductal.web.pages.entry import collect as collect_fields

    data = collect_fields(form, submitted)
    day = data.get(date_key)
    for f in form.fields:
        value = data.get(f.key)
        if f.type == "datetime" and isinstance(value, str) and _HHMM.match(value):
            hh, mm = value.split(":")
            data[f.key] = f"{day}T{int(hh):02d}:{mm}:00" if day else value
    return data


def _shown(form: FormDef, data: dict[str, Any]) -> dict[str, Any]:
    """Return stored values as the page shows them (date-times as HH:MM in a time box)."""
    out = dict(data)
    for f in form.fields:
        value = out.get(f.key)
        if f.type == "datetime" and isinstance(value, str) and len(value) >= 16:
            out[f.key] = value[11:16]
    return out


def _fields(form: FormDef, lang: str) -> dict[str, dict[str, Any]]:
    return {f.key: views.field_spec(f, lang) for f in form.fields}


def _sections(protocol: Protocol, form: FormDef, lang: str) -> list[dict[str, Any]]:
    specs = _fields(form, lang)
    steps = [s.field for s in procedure_settings(protocol).steps]
    placed: set[str] = set()
    out: list[dict[str, Any]] = []
    for key, keys in SECTIONS:
        if key == "checklist":
            keys = []
            for step in steps:
                keys.append(step)
                if step == "step_dilate_at":
                    keys += ["dilator_first_mm", "dilator_last_mm"]
        present = [specs[k] for k in keys if k in specs and specs[k]["type"] != "calc"]
        placed.update(keys)
        items: list[dict[str, Any]] = []  # checklist: each step with the fields that belong to it
        for spec in present if key == "checklist" else []:
            if spec["key"] in steps:
                items.append({"step": spec, "subs": []})
            elif items:
                items[-1]["subs"].append(spec)
        out.append({"key": key, "fields": present, "items": items})
    rest = [s for k, s in specs.items() if k not in placed and s["type"] != "calc"]
    if rest:
        out.append({"key": "other", "fields": rest, "items": []})
    return out


# --- the subject's procedure page -----------------------------------------------------------


@router.get("/subjects/{study_id}/procedure")
def overview(
    request: Request,
    access: SubjectViewer,
    db: DbSession,
    day: Annotated[str | None, Query(max_length=10)] = None,
    msg: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    subject = access.subject
    principal = access.principal
    protocol = _protocol(access)
    context: dict[str, Any] = {
        "s": views.subject_dict(subject, views.site_codes(db)),
        "protocol_id": subject.protocol_id,
        "msg": msg,
        "has_procedure": service.has_procedure(protocol),
    }
    if not context["has_procedure"]:
        return render(request, "procedure_subject.html", context)
    lang = service.text_lang(principal)
    settings = procedure_settings(protocol)
    when = _date(day, service.today()) or service.today()
    site = subject.site_id
    form = protocol.form(settings.record_form)
    procedures = [
        {
            "id": r.id,
            "date": r.data.get("procedure_date"),
            "operator": r.data.get("operator"),
            "duration": r.data.get("duration_min"),
            "finding": _label(form, "finding", r.data.get("finding"), lang),
            "status": r.status,
            "event": r.event.event_key,
            "event_instance": r.event.instance,
            "instance": r.instance,
        }
        for r in records.subject_records(db, subject, settings.record_form)
    ]
    status = course.course_status(db, subject=subject, today=service.today())
    results = pathology.pending_results(db, today=service.today(), subject=subject)
    context.update(
        {
            "day": when.isoformat(),
            "checks": checks.checks_for_day(db, subject=subject, day=when, lang=lang),
            "procedures": procedures,
            "course": status,
            "adherence": status.adherence,
            "results": results,
            "result_choices": _choices(protocol.form(settings.pathology.form), "result", lang),
            "max_minutes": max_minutes(protocol),
            "can_enter": principal.can("enter_data", site),
            "can_override": principal.can("override_check", site),
            "can_name": principal.can("identity", site)
            or "investigator" in principal.roles.get(site, set()),
            "today": service.today().isoformat(),
        }
    )
    return render(request, "procedure_subject.html", context)


def _choices(form: FormDef, key: str, lang: str) -> list[dict[str, str]]:
    spec = views.field_spec(form.field(key), lang)
    return list(spec.get("choices") or [])


def _label(form: FormDef, key: str, code: Any, lang: str) -> str:
    for choice in _choices(form, key, lang):
        if choice["code"] == code:
            return choice["label"]
    return "" if code is None else str(code)


# --- checks ---------------------------------------------------------------------------------


def _checks_page(
    request: Request,
    access: SubjectAccess,
    *,
    values: dict[str, Any],
    problems: dict[str, list[str]] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    protocol = _protocol(access)
    form = protocol.form(procedure_settings(protocol).checks_form)
    lang = service.text_lang(access.principal)
    return render(
        request,
        "procedure_checks.html",
        {
            "study_id": access.subject.study_id,
            "protocol_id": access.subject.protocol_id,
            "title": form.title.get(lang),
            "fields": [
                views.field_spec(f, access.principal.language)
                for f in form.fields
                if f.type != "calc"
            ],
            "values": values,
            "problems": problems or {},
            "error": error,
        },
        status=status,
    )


@router.get("/subjects/{study_id}/procedure/checks")
def checks_form(request: Request, access: SubjectEditor) -> Response:
    return _checks_page(request, access, values={"check_date": service.today().isoformat()})


@router.post("/subjects/{study_id}/procedure/checks")
def checks_save(
    request: Request, access: SubjectEditor, db: DbSession, form: FormFields, config: Config
) -> Response:
    protocol = _protocol(access)
    definition = protocol.form(procedure_settings(protocol).checks_form)
    data = collect(definition, form, "check_date")
    try:
        with db.begin_nested():
            _, found = checks.record_checks(
                db,
                subject=access.subject,
                data=data,
                actor=access.principal.username,
                vault=config.vault,
                lang=service.text_lang(access.principal),
            )
    except DuctalError as exc:
        return _checks_page(
            request,
            access,
            values=data,
            problems=_by_field(exc),
            error=exc.message,
            status=exc.status,
        )
    return RedirectResponse(
        f"/subjects/{access.subject.study_id}/procedure?day={found.day}&msg=checks_saved",
        status_code=303,
    )


@router.post("/subjects/{study_id}/procedure/override")
def override(access: SubjectOverrider, db: DbSession, form: FormFields) -> Response:
    day = _date(first(form, "day"))
    if day is None:
        raise ValidationError("no day", problems=[Problem("day", "is required")])
    checks.override_check(
        db,
        subject=access.subject,
        day=day,
        check=first(form, "check"),
        reason=first(form, "reason").strip(),
        actor=access.principal.username,
    )
    return RedirectResponse(
        f"/subjects/{access.subject.study_id}/procedure?day={day}&msg=overridden",
        status_code=303,
    )


# --- the procedure record and lavage sessions -----------------------------------------------


def _session_page(
    request: Request,
    db: DbSession,
    access: SubjectAccess,
    form_key: str,
    *,
    values: dict[str, Any],
    problems: dict[str, list[str]] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    protocol = _protocol(access)
    form = protocol.form(form_key)
    lang = access.principal.language
    ductoscopy = form_key == procedure_settings(protocol).record_form
    if ductoscopy:
        sections = _sections(protocol, form, lang)
    else:
        sections = [
            {
                "key": "lavage",
                "fields": [views.field_spec(f, lang) for f in form.fields if f.type != "calc"],
                "items": [],
            }
        ]
    day = _date(str(values.get("procedure_date") or values.get("session_date") or ""))
    report_ = checks.checks_for_day(
        db,
        subject=access.subject,
        day=day or service.today(),
        lang=service.text_lang(access.principal),
    )
    return render(
        request,
        "procedure_record.html",
        {
            "study_id": access.subject.study_id,
            "protocol_id": access.subject.protocol_id,
            "form_key": form_key,
            "ductoscopy": ductoscopy,
            "title": form.title.get(service.text_lang(access.principal)),
            "sections": sections,
            "values": _shown(form, values),
            "problems": problems or {},
            "error": error,
            "checks": report_,
            "max_minutes": max_minutes(protocol),
            "action": "record" if ductoscopy else "lavage",
        },
        status=status,
    )


@router.get("/subjects/{study_id}/procedure/record")
def record_form(request: Request, access: SubjectEditor, db: DbSession) -> Response:
    today = service.today().isoformat()
    values = {"procedure_date": today, "operator": access.principal.username}
    return _session_page(request, db, access, "ductoscopy_procedure", values=values)


def _store(config: Config, images: dict[str, bytes], data: dict[str, Any]) -> list[Problem]:
    """Store uploaded images by checksum and put their references into ``data``."""
    problems: list[Problem] = []
    for key, content in images.items():
        try:
            data[key] = record.store_image(config.settings.uploads_dir, content)
        except ValidationError as exc:
            problems += [Problem(key, p.message) for p in exc.problems]
    return problems


@router.post("/subjects/{study_id}/procedure/record")
def record_save(
    request: Request,
    access: SubjectEditor,
    db: DbSession,
    form: FormFields,
    config: Config,
    upload_image_1: Annotated[UploadFile | None, File()] = None,
    upload_image_2: Annotated[UploadFile | None, File()] = None,
    upload_image_3: Annotated[UploadFile | None, File()] = None,
) -> Response:
    images = {
        key: upload.file.read()
        for key, upload in zip(
            record.IMAGE_FIELDS, (upload_image_1, upload_image_2, upload_image_3), strict=True
        )
        if upload is not None and upload.filename
    }
    definition = _protocol(access).form("ductoscopy_procedure")
    data = collect(definition, form, "procedure_date")
    upload_problems = _store(config, images, data)
    try:
        if upload_problems:
            raise ValidationError("the images could not be stored", problems=upload_problems)
        with db.begin_nested():
            outcome = record.save_procedure(
                db,
                subject=access.subject,
                data=data,
                actor=access.principal.username,
                uploads_dir=config.settings.uploads_dir,
                vault=config.vault,
                lang=service.text_lang(access.principal),
            )
    except DuctalError as exc:
        return _session_page(
            request,
            db,
            access,
            "ductoscopy_procedure",
            values=data,
            problems=_by_field(exc),
            error=exc.message,
            status=exc.status,
        )
    return RedirectResponse(
        f"/subjects/{access.subject.study_id}/procedure/saved/{outcome.record.id}",
        status_code=303,
    )


@router.get("/subjects/{study_id}/procedure/saved/{record_id}")
def saved(request: Request, access: SubjectViewer, record_id: RowId, db: DbSession) -> Response:
    rec = db.get(FormRecord, record_id)
    if rec is None or rec.subject_id != access.subject.id or rec.form_key != "ductoscopy_procedure":
        return RedirectResponse(f"/subjects/{access.subject.study_id}/procedure", 303)
    lang = service.text_lang(access.principal)
    feedback = service.regimen_feedback(
        db, access.subject, "ductoscopy_procedure", dict(rec.data), lang
    )
    return render(
        request,
        "procedure_saved.html",
        {
            "study_id": access.subject.study_id,
            "protocol_id": access.subject.protocol_id,
            "record": rec,
            "fb": feedback,
            "pending": pathology.pending_results(db, today=service.today(), subject=access.subject),
            "can_name": access.principal.can("identity", access.subject.site_id)
            or "investigator" in access.principal.roles.get(access.subject.site_id, set()),
        },
    )


@router.post("/subjects/{study_id}/procedure/feedback")
def feedback(request: Request, access: SubjectEditor, db: DbSession, form: FormFields) -> Response:
    form_key = first(form, "form_key", "ductoscopy_procedure")
    protocol = _protocol(access)
    if form_key not in service.SESSION_FORMS:
        form_key = "ductoscopy_procedure"
    date_key = "procedure_date" if form_key == "ductoscopy_procedure" else "session_date"
    data = collect(protocol.form(form_key), form, date_key)
    out = service.regimen_feedback(
        db, access.subject, form_key, data, service.text_lang(access.principal)
    )
    return render(request, "_procedure_feedback.html", {"fb": out})


@router.get("/subjects/{study_id}/procedure/lavage")
def lavage_form(request: Request, access: SubjectEditor, db: DbSession) -> Response:
    values = {"session_date": service.today().isoformat(), "procedure": "infusion"}
    return _session_page(request, db, access, "lavage_session", values=values)


@router.post("/subjects/{study_id}/procedure/lavage")
def lavage_save(
    request: Request, access: SubjectEditor, db: DbSession, form: FormFields, config: Config
) -> Response:
    definition = _protocol(access).form("lavage_session")
    data = collect(definition, form, "session_date")
    try:
        with db.begin_nested():
            record.save_lavage_session(
                db,
                subject=access.subject,
                data=data,
                actor=access.principal.username,
                vault=config.vault,
                lang=service.text_lang(access.principal),
            )
    except DuctalError as exc:
        return _session_page(
            request,
            db,
            access,
            "lavage_session",
            values=data,
            problems=_by_field(exc),
            error=exc.message,
            status=exc.status,
        )
    return RedirectResponse(
        f"/subjects/{access.subject.study_id}/procedure?msg=session_saved", status_code=303
    )


# --- results, images, printing --------------------------------------------------------------


@router.post("/subjects/{study_id}/procedure/result")
def result_save(access: SubjectEditor, db: DbSession, form: FormFields, config: Config) -> Response:
    try:
        instance = int(first(form, "instance"))
    except ValueError:
        raise ValidationError("no sample", problems=[Problem("instance", "is required")]) from None
    data = {
        k: first(form, k) for k in ("result_date", "result", "diagnosis_text") if first(form, k)
    }
    outcome = pathology.enter_result(
        db,
        subject=access.subject,
        instance=instance,
        data=data,
        actor=access.principal.username,
        vault=config.vault,
    )
    msg = "result_flagged" if outcome.flagged else "result_saved"
    return RedirectResponse(
        f"/subjects/{access.subject.study_id}/procedure?msg={msg}", status_code=303
    )


@router.get("/subjects/{study_id}/procedure/image")
def image(
    access: SubjectViewer,
    db: DbSession,
    config: Config,
    ref: Annotated[str, Query(max_length=80, pattern=r"^sha256:[0-9a-f]{64}$")],
) -> Response:
    return service.image_response(db, access.subject, ref, config)


@router.get("/subjects/{study_id}/procedure/instructions")
def instructions_sheet(
    access: SubjectViewer,
    db: DbSession,
    config: Config,
    lang: Annotated[Literal["en", "zh"] | None, Query()] = None,
    format: Annotated[Literal["html", "pdf"], Query()] = "pdf",
    with_name: bool = False,
    session_date: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    details = service.subject_sheet(
        db,
        access,
        config,
        lang=lang or service.text_lang(access.principal),
        with_name=with_name,
        session_date=_date(session_date),
    )
    return service.sheet_response(details, format, f"instructions-{access.subject.study_id}")


@router.get("/records/{record_id}/procedure-report")
def procedure_report(
    access: RecordViewer,
    db: DbSession,
    config: Config,
    lang: Annotated[Literal["en", "zh"] | None, Query()] = None,
    format: Annotated[Literal["html", "pdf"], Query()] = "pdf",
) -> Response:
    language = lang or service.text_lang(access.principal)
    uploads = config.settings.uploads_dir
    rid = access.record.id
    if format == "html":
        return Response(
            report.procedure_report_html(db, record_id=rid, lang=language, uploads_dir=uploads),
            media_type="text/html; charset=utf-8",
        )
    return Response(
        report.procedure_report_pdf(db, record_id=rid, lang=language, uploads_dir=uploads),
        media_type="application/pdf",
        headers={"content-disposition": f'inline; filename="procedure-{rid}.pdf"'},
    )


# --- the study's procedure page and the dashboard panel --------------------------------------


@router.get("/studies/{protocol_id}/procedure")
def study_overview(
    request: Request, protocol_id: str, principal: Viewer, db: DbSession
) -> Response:
    protocol = records.protocol_of(records.latest_protocol_version(db, protocol_id))
    context: dict[str, Any] = {
        "protocol_id": protocol_id,
        "protocols": views.protocols(db, principal.language),
        "has_procedure": service.has_procedure(protocol),
    }
    if context["has_procedure"]:
        subjects = service.visible_subjects(db, principal, protocol_id)
        codes = views.site_codes(db)
        context.update(
            {
                "pending": service.pending(db, principal, protocol_id=protocol_id),
                "due": service.sessions_due(db, principal, protocol_id),
                "adherence": course.adherence_table(db, subjects=subjects, today=service.today()),
                "log": service.operator_log_rows(db, principal, protocol_id, None),
                "sites": [codes[i] for i in principal.sites("view") if i in codes],
                "max_minutes": max_minutes(protocol),
            }
        )
    return render(request, "procedure_study.html", context)


@router.get("/studies/{protocol_id}/procedure/summary")
def summary(request: Request, protocol_id: str, principal: Viewer, db: DbSession) -> Response:
    protocol = records.protocol_of(records.latest_protocol_version(db, protocol_id))
    if not service.has_procedure(protocol):
        return Response("", media_type="text/html")
    found = service.pending(db, principal, protocol_id=protocol_id)
    return render(
        request,
        "_procedure_summary.html",
        {
            "protocol_id": protocol_id,
            "overdue": [r for r in found if r["overdue"]],
            "pending": found,
            "due": service.sessions_due(db, principal, protocol_id),
        },
    )


@router.get("/studies/{protocol_id}/procedure/operator-log")
def operator_log(
    protocol_id: str,
    principal: Viewer,
    db: DbSession,
    format: Annotated[Literal["html", "pdf"], Query()] = "pdf",
) -> Response:
    options: dict[str, Any] = {
        "protocol_id": protocol_id,
        "site_ids": principal.sites("view"),
        "lang": service.text_lang(principal),
    }
    if format == "html":
        return Response(report.operator_log_html(db, **options), media_type="text/html")
    return Response(
        report.operator_log_pdf(db, **options),
        media_type="application/pdf",
        headers={"content-disposition": f'inline; filename="operator-log-{protocol_id}.pdf"'},
    )


@router.get("/studies/{protocol_id}/procedure/instructions")
def site_instructions(
    protocol_id: str,
    principal: Viewer,
    db: DbSession,
    site: Annotated[str | None, Query(max_length=32)] = None,
    lang: Annotated[Literal["en", "zh"] | None, Query()] = None,
    format: Annotated[Literal["html", "pdf"], Query()] = "pdf",
    session_date: Annotated[str | None, Query(max_length=10)] = None,
) -> Response:
    from ductal.procedure import instructions

    code = service.site_for_sheet(db, principal, site or None)
    protocol = records.protocol_of(records.latest_protocol_version(db, protocol_id))
    details = instructions.site_sheet(
        db,
        site_code=code,
        lang=lang or service.text_lang(principal),
        session_date=_date(session_date),
        protocol=protocol,
    )
    return service.sheet_response(details, format, f"instructions-{code}")
