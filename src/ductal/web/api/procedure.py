"""API: the ductoscopy / lavage procedure workflow (``ductal.procedure``) for scripts and pages.

Pre-session checks and the investigator's override, the procedure record with its still images,
lavage course sessions, live regimen feedback, the course status, pending pathology results,
the patient instruction sheet, the procedure report and the operator log. Every route is a thin
call into ``ductal.procedure``; the helpers here are shared with the pages.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import Field, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import accounts, audit, records
from ductal.errors import NotFound, PermissionDenied, Problem, ValidationError
from ductal.models import Subject
from ductal.procedure import checks, course, instructions, pathology, record, regimen, report
from ductal.procedure.rules import Finding, max_minutes, procedure_settings
from ductal.protocols.model import Protocol
from ductal.protocols.validation import validate_form_data
from ductal.web import views
from ductal.web.access import Principal
from ductal.web.api._common import ERROR_RESPONSES, Body
from ductal.web.deps import (
    Config,
    DbSession,
    RecordViewer,
    SubjectAccess,
    SubjectEditor,
    SubjectViewer,
    Viewer,
    subject_access,
)

router = APIRouter(tags=["procedure"], responses=ERROR_RESPONSES)

SubjectOverrider = Annotated[SubjectAccess, Depends(subject_access("override_check"))]
SESSION_FORMS = ("ductoscopy_procedure", "lavage_session")


# --- helpers shared with the pages ----------------------------------------------------------


def text_lang(principal: Principal) -> str:
    """Return ``en`` or ``zh``: the language of protocol texts and printed sheets for the user."""
    return views.protocol_text_lang(principal.language)


def today() -> dt.date:
    return dt.date.today()


def regimen_feedback(
    db: Session, subject: Subject, form_key: str, data: dict[str, Any], lang: str
) -> dict[str, Any]:
    """Return the regimen rules that hold for a draft session record (nothing is stored).

    The draft is first cleaned by the form's own validation so that calculated fields (the
    duration from the start and end times) are there for the rules; invalid answers are left out.
    """
    protocol = records.subject_protocol(subject)
    if form_key not in SESSION_FORMS:
        raise NotFound(f"no session form {form_key!r}")
    form = protocol.form(form_key)
    clean, _ = validate_form_data(form, data, lang=lang)
    findings: list[Finding] = regimen.evaluate_regimen(
        protocol, form_key, clean, baseline=regimen.baseline_data(db, subject), lang=lang
    )
    return {
        "findings": [f.to_dict() for f in findings],
        "duration_min": clean.get("duration_min"),
        "max_minutes": max_minutes(protocol),
        "over_limit": any(f.key == "duration_over_limit" for f in findings),
    }


def has_procedure(protocol: Protocol) -> bool:
    return "procedure" in protocol.settings


def image_refs(db: Session, subject: Subject) -> set[str]:
    """Return the image references held by the subject's procedure records."""
    protocol = records.subject_protocol(subject)
    form_key = procedure_settings(protocol).record_form
    return {
        str(r.data[k])
        for r in records.subject_records(db, subject, form_key)
        for k in record.IMAGE_FIELDS
        if r.data.get(k)
    }


def image_response(db: Session, subject: Subject, ref: str, config: Any) -> Response:
    """Return a stored still image of the subject, only when its checksum still holds."""
    if ref not in image_refs(db, subject):
        raise NotFound(f"no image {ref} in {subject.study_id}'s procedure records")
    content = record.read_image(config.settings.uploads_dir, ref)
    kind = "application/octet-stream"
    if content.startswith(b"\x89PNG"):
        kind = "image/png"
    elif content.startswith(b"\xff\xd8"):
        kind = "image/jpeg"
    return Response(content, media_type=kind)


def sheet_response(details: instructions.SheetDetails, fmt: str, name: str) -> Response:
    """Return an instruction sheet as an HTML page or a PDF download."""
    if fmt == "pdf":
        return Response(
            instructions.render_instructions_pdf(details),
            media_type="application/pdf",
            headers={"content-disposition": f'inline; filename="{name}.pdf"'},
        )
    return HTMLResponse(instructions.render_instructions_html(details))


def subject_sheet(
    db: Session,
    access: SubjectAccess,
    config: Any,
    *,
    lang: str,
    with_name: bool,
    session_date: dt.date | None,
) -> instructions.SheetDetails:
    """Return a subject's sheet details; the name only for an admin or investigator there."""
    principal = access.principal
    if with_name and not (
        principal.can("identity", access.subject.site_id)
        or "investigator" in principal.roles.get(access.subject.site_id, set())
    ):
        raise PermissionDenied(
            "only an admin or investigator at the subject's site may print the patient's name"
        )
    details = instructions.subject_sheet(
        db,
        subject=access.subject,
        lang=lang,
        session_date=session_date,
        viewer=principal.username,
        include_name=with_name,
        vault=config.vault,
    )
    if with_name:  # printing the name reads the identity vault: audited as the identity page is
        audit.record(
            db,
            actor=principal.username,
            action="view_identity",
            entity_type="subject",
            entity_id=access.subject.id,
            after={"fields": ["name"], "for": "patient instruction sheet"},
            subject_study_id=access.subject.study_id,
            site_id=access.subject.site_id,
        )
    return details


def visible_subjects(db: Session, principal: Principal, protocol_id: str) -> list[Subject]:
    """Return the protocol's subjects at the sites the user may view, by study id."""
    records.latest_protocol_version(db, protocol_id)
    stmt = (
        select(Subject)
        .where(Subject.protocol_id == protocol_id, Subject.site_id.in_(principal.sites("view")))
        .order_by(Subject.study_id)
    )
    return list(db.scalars(stmt))


def pending(
    db: Session, principal: Principal, *, protocol_id: str | None = None, overdue: bool = False
) -> list[dict[str, Any]]:
    """Return the awaited pathology results at the user's sites (overdue ones only if asked)."""
    found = pathology.pending_results(db, today=today(), site_ids=principal.sites("view"))
    if protocol_id is not None:
        ids = {s.study_id for s in visible_subjects(db, principal, protocol_id)}
        found = [r for r in found if r.study_id in ids]
    return [r.to_dict() for r in found if r.overdue or not overdue]


def sessions_due(db: Session, principal: Principal, protocol_id: str) -> list[dict[str, Any]]:
    """Return the course visits due today or missed, per subject, at the user's sites."""
    out: list[dict[str, Any]] = []
    for subject in visible_subjects(db, principal, protocol_id):
        if subject.status not in ("enrolled",):
            continue
        status = course.course_status(db, subject=subject, today=today())
        for visit in status.visits:
            if visit.status == "due":
                out.append({"study_id": subject.study_id, **visit.to_dict()})
    return out


def operator_log_rows(
    db: Session, principal: Principal, protocol_id: str, operator: str | None
) -> dict[str, Any]:
    summaries, total = report.operator_log(
        db, protocol_id=protocol_id, site_ids=principal.sites("view"), operator=operator
    )
    return {
        "operators": [s.to_dict() for s in summaries],
        "all": total.to_dict() if total else None,
    }


def site_for_sheet(db: Session, principal: Principal, code: str | None) -> str:
    codes = views.site_codes(db)
    mine = [codes[i] for i in principal.sites("view") if i in codes]
    if code is None:
        if len(mine) != 1:
            raise ValidationError(
                "choose a site", problems=[Problem("site", f"one of: {', '.join(mine)}")]
            )
        return mine[0]
    if code not in mine:
        raise NotFound(f"no site {code!r}")
    accounts.get_site(db, code)
    return code


# --- request bodies -------------------------------------------------------------------------


class ChecksIn(Body):
    data: dict[str, Any]


class OverrideIn(Body):
    day: dt.date
    check: StrictStr = Field(min_length=1, max_length=64)
    reason: StrictStr = Field(min_length=1, max_length=2000)


class RegimenIn(Body):
    form: Literal["ductoscopy_procedure", "lavage_session"] = "ductoscopy_procedure"
    data: dict[str, Any]


class ProcedureIn(Body):
    data: dict[str, Any]
    record_id: StrictInt | None = Field(default=None, ge=1)
    expected_version: StrictInt | None = Field(default=None, ge=1)
    reason: StrictStr | None = Field(default=None, max_length=2000)


class LavageIn(Body):
    data: dict[str, Any]
    event_instance: StrictInt | None = Field(default=None, ge=1, le=1000)


class ResultIn(Body):
    instance: StrictInt = Field(ge=1, le=100000)
    data: dict[str, Any]


Lang = Annotated[Literal["en", "zh"] | None, Query(description="default: the user's language")]
Format = Annotated[Literal["html", "pdf"], Query()]


# --- checks ---------------------------------------------------------------------------------


@router.get(
    "/subjects/{study_id}/procedure/checks",
    summary="The pre-session checks of a day: findings, open blocks, overrides",
)
def get_checks(
    access: SubjectViewer, db: DbSession, day: Annotated[dt.date | None, Query()] = None
) -> dict[str, Any]:
    found = checks.checks_for_day(
        db, subject=access.subject, day=day or today(), lang=text_lang(access.principal)
    )
    return found.to_dict()


@router.post(
    "/subjects/{study_id}/procedure/checks",
    status_code=201,
    summary="Record the pre-session checks (a pre_session_checks form) and judge them",
)
def post_checks(
    access: SubjectEditor, body: ChecksIn, db: DbSession, config: Config
) -> dict[str, Any]:
    saved, found = checks.record_checks(
        db,
        subject=access.subject,
        data=body.data,
        actor=access.principal.username,
        vault=config.vault,
        lang=text_lang(access.principal),
    )
    return {"record_id": saved.id, **found.to_dict()}


@router.post(
    "/subjects/{study_id}/procedure/checks/override",
    summary="Override one open blocking check of a day (investigators, with a reason; audited)",
)
def post_override(access: SubjectOverrider, body: OverrideIn, db: DbSession) -> dict[str, Any]:
    found = checks.override_check(
        db,
        subject=access.subject,
        day=body.day,
        check=body.check,
        reason=body.reason,
        actor=access.principal.username,
    )
    return found.to_dict()


# --- sessions -------------------------------------------------------------------------------


@router.post(
    "/subjects/{study_id}/procedure/regimen",
    summary="Evaluate the regimen rules on a draft session record (stores nothing)",
)
def post_regimen(access: SubjectEditor, body: RegimenIn, db: DbSession) -> dict[str, Any]:
    return regimen_feedback(db, access.subject, body.form, body.data, text_lang(access.principal))


@router.post(
    "/subjects/{study_id}/procedure",
    status_code=201,
    summary="Save a ductoscopy procedure record (whole-record validation, queries, results)",
)
def post_procedure(
    access: SubjectEditor, body: ProcedureIn, db: DbSession, config: Config
) -> dict[str, Any]:
    outcome = record.save_procedure(
        db,
        subject=access.subject,
        data=body.data,
        actor=access.principal.username,
        record_id=body.record_id,
        expected_version=body.expected_version,
        reason=body.reason,
        uploads_dir=config.settings.uploads_dir,
        vault=config.vault,
        lang=text_lang(access.principal),
    )
    return outcome.to_dict()


@router.post(
    "/subjects/{study_id}/lavage-sessions",
    status_code=201,
    summary="Save a lavage course session (infusion or massage)",
)
def post_lavage(
    access: SubjectEditor, body: LavageIn, db: DbSession, config: Config
) -> dict[str, Any]:
    outcome = record.save_lavage_session(
        db,
        subject=access.subject,
        data=body.data,
        actor=access.principal.username,
        event_instance=body.event_instance,
        vault=config.vault,
        lang=text_lang(access.principal),
    )
    return {
        "record_id": outcome.record.id,
        "findings": [f.to_dict() for f in outcome.findings],
        "checks": outcome.checks.to_dict() if outcome.checks else None,
        "course_dates": [(i, d.isoformat()) for i, d in outcome.course_dates],
    }


@router.post(
    "/subjects/{study_id}/images",
    status_code=201,
    summary="Store a still image by its SHA-256; returns the reference for image_1..3",
)
async def post_image(
    access: SubjectEditor, config: Config, file: Annotated[UploadFile, File()]
) -> dict[str, str]:
    content = await file.read()
    return {"ref": record.store_image(config.settings.uploads_dir, content)}


@router.get(
    "/subjects/{study_id}/images",
    summary="A still image of the subject's procedures (only if its checksum still holds)",
)
def get_image(
    access: SubjectViewer,
    db: DbSession,
    config: Config,
    ref: Annotated[str, Query(max_length=80, pattern=r"^sha256:[0-9a-f]{64}$")],
) -> Response:
    return image_response(db, access.subject, ref, config)


# --- course and results ---------------------------------------------------------------------


@router.get("/subjects/{study_id}/course", summary="The lavage course: visits, deviations")
def get_course(
    access: SubjectViewer, db: DbSession, on: Annotated[dt.date | None, Query()] = None
) -> dict[str, Any]:
    return course.course_status(db, subject=access.subject, today=on or today()).to_dict()


@router.get(
    "/protocols/{protocol_id}/adherence",
    summary="Lavage course adherence, one row per subject at your sites",
)
def get_adherence(protocol_id: str, principal: Viewer, db: DbSession) -> dict[str, Any]:
    rows = course.adherence_table(
        db, subjects=visible_subjects(db, principal, protocol_id), today=today()
    )
    return {"items": rows, "count": len(rows)}


@router.get("/pathology/pending", summary="Awaited pathology results at your sites")
def get_pending(
    principal: Viewer,
    db: DbSession,
    overdue: bool = False,
    protocol: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    rows = pending(db, principal, protocol_id=protocol, overdue=overdue)
    return {"items": rows, "count": len(rows)}


@router.post(
    "/subjects/{study_id}/pathology-results",
    status_code=201,
    summary="Enter the pathology report of a pending sample (a flagged result blocks lavage)",
)
def post_result(
    access: SubjectEditor, body: ResultIn, db: DbSession, config: Config
) -> dict[str, Any]:
    outcome = pathology.enter_result(
        db,
        subject=access.subject,
        instance=body.instance,
        data=body.data,
        actor=access.principal.username,
        vault=config.vault,
    )
    return {"record_id": outcome.record.id, "flagged": outcome.flagged}


# --- printing -------------------------------------------------------------------------------


@router.get(
    "/subjects/{study_id}/instructions",
    summary="The patient instruction sheet (the name only for an admin or investigator there)",
    response_class=Response,
)
def get_subject_instructions(
    access: SubjectViewer,
    db: DbSession,
    config: Config,
    lang: Lang = None,
    format: Format = "pdf",
    with_name: bool = False,
    session_date: Annotated[dt.date | None, Query()] = None,
) -> Response:
    details = subject_sheet(
        db,
        access,
        config,
        lang=lang or text_lang(access.principal),
        with_name=with_name,
        session_date=session_date,
    )
    return sheet_response(details, format, f"instructions-{access.subject.study_id}")


@router.get(
    "/instructions",
    summary="A site's blank-name patient instruction sheet",
    response_class=Response,
)
def get_site_instructions(
    principal: Viewer,
    db: DbSession,
    site: Annotated[str | None, Query(max_length=32)] = None,
    protocol: Annotated[str | None, Query(max_length=64)] = None,
    lang: Lang = None,
    format: Format = "pdf",
    session_date: Annotated[dt.date | None, Query()] = None,
) -> Response:
    code = site_for_sheet(db, principal, site)
    proto = records.protocol_of(records.latest_protocol_version(db, protocol)) if protocol else None
    details = instructions.site_sheet(
        db,
        site_code=code,
        lang=lang or text_lang(principal),
        session_date=session_date,
        protocol=proto,
    )
    return sheet_response(details, format, f"instructions-{code}")


@router.get(
    "/records/{record_id}/procedure-report",
    summary="The procedure report of a ductoscopy record for the medical record (study id only)",
    response_class=Response,
)
def get_procedure_report(
    access: RecordViewer, db: DbSession, config: Config, lang: Lang = None, format: Format = "pdf"
) -> Response:
    language = lang or text_lang(access.principal)
    uploads = config.settings.uploads_dir
    rid = access.record.id
    if format == "pdf":
        return Response(
            report.procedure_report_pdf(db, record_id=rid, lang=language, uploads_dir=uploads),
            media_type="application/pdf",
            headers={"content-disposition": f'inline; filename="procedure-{rid}.pdf"'},
        )
    return HTMLResponse(
        report.procedure_report_html(db, record_id=rid, lang=language, uploads_dir=uploads)
    )


@router.get(
    "/protocols/{protocol_id}/operator-log",
    summary="Procedures per operator with exact 95% CIs against the protocol's benchmarks",
    response_model=None,
)
def get_operator_log(
    protocol_id: str,
    principal: Viewer,
    db: DbSession,
    operator: Annotated[str | None, Query(max_length=64)] = None,
    format: Annotated[Literal["json", "html", "pdf"], Query()] = "json",
    lang: Lang = None,
) -> Response | dict[str, Any]:
    sites = principal.sites("view")
    language = lang or text_lang(principal)
    options: dict[str, Any] = {
        "protocol_id": protocol_id,
        "site_ids": sites,
        "operator": operator,
        "lang": language,
    }
    if format == "pdf":
        return Response(
            report.operator_log_pdf(db, **options),
            media_type="application/pdf",
            headers={"content-disposition": f'inline; filename="operator-log-{protocol_id}.pdf"'},
        )
    if format == "html":
        return HTMLResponse(report.operator_log_html(db, **options))
    return operator_log_rows(db, principal, protocol_id, operator)
