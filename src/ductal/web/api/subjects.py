"""API: subjects — list, screen (with eligibility), consent, enrol, status, casebook, identity."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import Field, StrictStr

from ductal import accounts, records
from ductal.errors import NotFound, PermissionDenied, Problem, ValidationError
from ductal.models import SUBJECT_STATUSES, Subject
from ductal.protocols.validation import eligibility
from ductal.web import views
from ductal.web.api._common import ERROR_RESPONSES, MAX_PAGE, Body, stream_page
from ductal.web.deps import (
    Config,
    DbSession,
    Screener,
    SubjectEditor,
    SubjectIdentity,
    SubjectRandomiser,
    SubjectScreener,
    SubjectViewer,
    Viewer,
)

router = APIRouter(tags=["subjects"], responses=ERROR_RESPONSES)


class ScreenIn(Body):
    protocol: StrictStr = Field(max_length=64)
    site: StrictStr = Field(max_length=32)
    screening: dict[str, Any]
    identity: dict[str, Any] | None = None


class EligibilityIn(Body):
    protocol: StrictStr = Field(max_length=64)
    screening: dict[str, Any]


class ConsentIn(Body):
    consent_date: dt.date
    note: StrictStr | None = Field(default=None, max_length=2000)


class EnrolIn(Body):
    enrolled_on: dt.date | None = None


class StatusIn(Body):
    status: Literal["withdrawn", "lost_to_follow_up", "completed", "enrolled"]
    reason: StrictStr = Field(min_length=1, max_length=2000)


def subject_out(db: DbSession, subject: Subject) -> dict[str, Any]:
    return views.subject_dict(subject, views.site_codes(db))


@router.get("/subjects", summary="List the subjects of your sites (paginated, streamed)")
def list_subjects(
    principal: Viewer,
    config: Config,
    db: DbSession,
    protocol: Annotated[str | None, Query(max_length=64)] = None,
    site: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
    q: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=32, description="cursor: last study id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> StreamingResponse:
    if status is not None and status not in SUBJECT_STATUSES:
        raise ValidationError(
            "unknown status", problems=[Problem("status", f"one of: {', '.join(SUBJECT_STATUSES)}")]
        )
    site_id = accounts.get_site(db, site).id if site else None
    stmt = views.subject_query(principal, protocol_id=protocol, site_id=site_id, status=status, q=q)
    if after:
        stmt = stmt.where(Subject.study_id > after)
    codes = views.site_codes(db)
    return stream_page(
        config.engine,
        stmt,
        lambda s, _db: views.subject_dict(s, codes),
        limit=limit,
        cursor=lambda s: s.study_id,
    )


@router.post("/eligibility", summary="Check screening answers without storing anything")
def check_eligibility(body: EligibilityIn, principal: Screener, db: DbSession) -> dict[str, Any]:
    proto = records.protocol_of(records.latest_protocol_version(db, body.protocol))
    return eligibility_result(proto, body.screening, principal.language)


def eligibility_result(proto: Any, screening: dict[str, Any], lang: str) -> dict[str, Any]:
    """Return the live eligibility verdict with its reasons, and the form's own problems."""
    from ductal.protocols.validation import validate_form_data

    form = proto.form(proto.screening_form)
    plang = views.protocol_text_lang(lang)
    _, problems = validate_form_data(form, screening, lang=plang)
    result = eligibility(proto, screening, lang=plang)
    return {
        "eligible": result.eligible,
        "reasons": [msg for _key, msg in result.failed],
        "missing": result.missing,
        "problems": [{"field": p.field, "message": p.message} for p in problems],
    }


@router.post("/subjects", status_code=201, summary="Screen a patient (stores the screening form)")
def screen(body: ScreenIn, principal: Screener, db: DbSession, config: Config) -> dict[str, Any]:
    site = accounts.get_site(db, body.site)
    if not principal.can("screen", site.id):
        if not principal.belongs_to(site.id):
            raise NotFound(f"no site {body.site!r}")
        raise PermissionDenied("your role does not allow screening at this site")
    subject = records.screen(
        db,
        protocol_id=body.protocol,
        site=site,
        screening=body.screening,
        actor=principal.username,
        identity=body.identity,
        vault=config.vault if body.identity is not None else None,
    )
    return subject_out(db, subject)


@router.get("/subjects/{study_id}", summary="One subject (pseudonymised)")
def get_subject(access: SubjectViewer, db: DbSession) -> dict[str, Any]:
    return subject_out(db, access.subject)


@router.post("/subjects/{study_id}/consent", summary="Record consent of an eligible subject")
def consent(access: SubjectScreener, body: ConsentIn, db: DbSession) -> dict[str, Any]:
    reason = f"written informed consent signed on {body.consent_date.isoformat()}"
    if body.note:
        reason += f"; {body.note}"
    records.change_status(
        db,
        subject=access.subject,
        status="consented",
        actor=access.principal.username,
        reason=reason,
    )
    return subject_out(db, access.subject)


@router.post("/subjects/{study_id}/enrol", summary="Enrol a consented subject")
def enrol(access: SubjectScreener, body: EnrolIn, db: DbSession) -> dict[str, Any]:
    records.enrol(
        db, subject=access.subject, actor=access.principal.username, enrolled_on=body.enrolled_on
    )
    return subject_out(db, access.subject)


@router.post(
    "/subjects/{study_id}/randomise",
    summary="Randomise an enrolled subject (concealed list or minimisation); reveals the arm",
)
def randomise(access: SubjectRandomiser, db: DbSession) -> dict[str, Any]:
    from ductal.randomisation import randomise as assign

    done = assign(db, subject=access.subject, actor=access.principal.username)
    return {**subject_out(db, access.subject), "assignment": done.to_dict()}


@router.post("/subjects/{study_id}/status", summary="Withdraw, complete or mark lost")
def change_status(access: SubjectEditor, body: StatusIn, db: DbSession) -> dict[str, Any]:
    records.change_status(
        db,
        subject=access.subject,
        status=body.status,
        actor=access.principal.username,
        reason=body.reason,
    )
    return subject_out(db, access.subject)


@router.get("/subjects/{study_id}/casebook", summary="Events × forms grid with statuses")
def casebook(access: SubjectViewer, db: DbSession) -> dict[str, Any]:
    return views.casebook(db, access.subject, access.principal.language)


@router.get("/subjects/{study_id}/records", summary="Every form record of the subject")
def subject_records(access: SubjectViewer, db: DbSession) -> dict[str, Any]:
    lang = access.principal.language
    items = [views.record_dict(db, r, lang) for r in records.subject_records(db, access.subject)]
    return {"items": items, "count": len(items), "next": None}


@router.get("/subjects/{study_id}/identity", summary="Direct identifiers (admins only)")
def identity(access: SubjectIdentity, db: DbSession, config: Config) -> dict[str, Any]:
    from ductal import audit

    values = records.get_identity(db, subject=access.subject, vault=config.vault)
    # reading identifiers is itself recorded
    audit.record(
        db,
        actor=access.principal.username,
        action="view_identity",
        entity_type="subject",
        entity_id=access.subject.id,
        subject_study_id=access.subject.study_id,
        site_id=access.subject.site_id,
    )
    return {"study_id": access.subject.study_id, "identity": values}
