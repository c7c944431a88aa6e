"""Pages: dashboard, subject list, screening with live eligibility, consent, enrolment, casebook."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from ductal import accounts, audit, records
from ductal.errors import DuctalError, PermissionDenied
from ductal.models import SUBJECT_STATUSES, Site
from ductal.web import views
from ductal.web.api.subjects import eligibility_result
from ductal.web.deps import (
    Config,
    DbSession,
    FormFields,
    Screener,
    SubjectIdentity,
    SubjectRandomiser,
    SubjectScreener,
    SubjectViewer,
    Viewer,
)
from ductal.web.pages._render import first, render

router = APIRouter(include_in_schema=False)


def _screening_form(proto: Any, form: dict[str, list[str]]) -> dict[str, Any]:
    from ductal.web.pages.entry import collect

    return collect(proto.form(proto.screening_form), form)


@router.get("/")
def home(principal: Viewer, db: DbSession) -> Response:
    protos = views.protocols(db, principal.language)
    if not protos:
        return RedirectResponse("/account", status_code=303)
    return RedirectResponse(f"/studies/{protos[0]['id']}", status_code=303)


@router.get("/studies/{protocol_id}")
def dashboard(request: Request, protocol_id: str, principal: Viewer, db: DbSession) -> Response:
    data = views.dashboard(db, principal, protocol_id)
    return render(
        request,
        "dashboard.html",
        {
            "d": data,
            "protocols": views.protocols(db, principal.language),
            "protocol_id": protocol_id,
            "chart": views.enrolment_svg(data["enrolment"], data["protocol"]["target_enrolment"]),
        },
    )


@router.get("/studies/{protocol_id}/subjects")
def subjects(
    request: Request,
    protocol_id: str,
    principal: Viewer,
    db: DbSession,
    q: Annotated[str | None, Query(max_length=64)] = None,
    site: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    records.latest_protocol_version(db, protocol_id)
    codes = views.site_codes(db)
    site_id = next((i for i, c in codes.items() if c == site), None) if site else None
    stmt = views.subject_query(
        principal,
        protocol_id=protocol_id,
        site_id=site_id,
        status=status if status in SUBJECT_STATUSES else None,
        q=q,
    ).limit(500)
    rows = [views.subject_dict(s, codes) for s in db.scalars(stmt)]
    return render(
        request,
        "subjects.html",
        {
            "rows": rows,
            "protocol_id": protocol_id,
            "protocols": views.protocols(db, principal.language),
            "sites": [codes[i] for i in principal.sites("view") if i in codes],
            "statuses": SUBJECT_STATUSES,
            "filters": {"q": q or "", "site": site or "", "status": status or ""},
        },
    )


def _screen_context(db: DbSession, principal: Any, protocol_id: str) -> dict[str, Any]:
    pv = records.latest_protocol_version(db, protocol_id)
    proto = records.protocol_of(pv)
    form = proto.form(proto.screening_form)
    sites = [db.get_one(Site, i) for i in principal.sites("screen")]
    return {
        "protocol_id": protocol_id,
        "protocols": views.protocols(db, principal.language),
        "form": {
            "title": form.title.get(views.protocol_text_lang(principal.language)),
            "fields": [views.field_spec(f, principal.language) for f in form.fields],
        },
        "sites": [{"code": s.code, "name": s.name} for s in sites],
        "values": {},
        "problems": {},
        "context": {},
    }


@router.get("/studies/{protocol_id}/screen")
def screen_form(request: Request, protocol_id: str, principal: Screener, db: DbSession) -> Response:
    return render(request, "screen.html", _screen_context(db, principal, protocol_id))


@router.post("/studies/{protocol_id}/screen/check")
def screen_check(
    request: Request, protocol_id: str, principal: Screener, db: DbSession, form: FormFields
) -> Response:
    proto = records.protocol_of(records.latest_protocol_version(db, protocol_id))
    result = eligibility_result(proto, _screening_form(proto, form), principal.language)
    return render(request, "_eligibility.html", {"result": result})


@router.post("/studies/{protocol_id}/screen")
def screen(
    request: Request,
    protocol_id: str,
    principal: Screener,
    db: DbSession,
    form: FormFields,
    config: Config,
) -> Response:
    proto = records.protocol_of(records.latest_protocol_version(db, protocol_id))
    data = _screening_form(proto, form)
    code = first(form, "site")
    try:
        site = accounts.get_site(db, code)
        if not principal.can("screen", site.id):
            raise PermissionDenied("your role does not allow screening at this site")
        with db.begin_nested():  # a refused screening rolls back to here; the page still renders
            subject = records.screen(
                db, protocol_id=protocol_id, site=site, screening=data, actor=principal.username
            )
    except DuctalError as exc:
        context = _screen_context(db, principal, protocol_id)
        context["values"] = data
        context["site"] = code
        context["problems"] = _by_field(exc)
        context["error"] = exc.message
        return render(request, "screen.html", context, status=exc.status)
    return RedirectResponse(f"/subjects/{subject.study_id}?msg=screened", status_code=303)


def _by_field(exc: DuctalError) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in exc.problems:
        out.setdefault(p.field, []).append(p.message)
    return out


@router.get("/subjects/{study_id}")
def casebook(
    request: Request,
    access: SubjectViewer,
    db: DbSession,
    msg: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    subject = access.subject
    proto = records.subject_protocol(subject)
    codes = views.site_codes(db)
    return render(
        request,
        "casebook.html",
        {
            "s": views.subject_dict(subject, codes),
            "protocol_id": subject.protocol_id,
            "protocol_title": proto.title.get(views.protocol_text_lang(access.principal.language)),
            "randomised": proto.is_randomised,
            "cb": views.casebook(db, subject, access.principal.language),
            "can_enrol": access.principal.can("enrol", subject.site_id),
            "can_enter": access.principal.can("enter_data", subject.site_id),
            "can_randomise": access.principal.can("randomise", subject.site_id),
            "can_identity": access.principal.can("identity", subject.site_id),
            "msg": msg,
            "today": dt.date.today().isoformat(),
        },
    )


@router.post("/subjects/{study_id}/consent")
def consent(access: SubjectScreener, db: DbSession, form: FormFields) -> Response:
    day = first(form, "consent_date") or dt.date.today().isoformat()
    records.change_status(
        db,
        subject=access.subject,
        status="consented",
        actor=access.principal.username,
        reason=f"written informed consent signed on {day}",
    )
    return RedirectResponse(f"/subjects/{access.subject.study_id}?msg=consented", status_code=303)


@router.post("/subjects/{study_id}/enrol")
def enrol(access: SubjectScreener, db: DbSession, form: FormFields) -> Response:
    raw = first(form, "enrolled_on")
    try:
        day = dt.date.fromisoformat(raw) if raw else None
    except ValueError:
        day = None
    records.enrol(db, subject=access.subject, actor=access.principal.username, enrolled_on=day)
    return RedirectResponse(f"/subjects/{access.subject.study_id}?msg=enrolled", status_code=303)


@router.post("/subjects/{study_id}/randomise")
def randomise(access: SubjectRandomiser, db: DbSession) -> Response:
    from ductal.randomisation import randomise as assign

    assign(db, subject=access.subject, actor=access.principal.username)
    return RedirectResponse(f"/subjects/{access.subject.study_id}?msg=randomised", status_code=303)


@router.get("/subjects/{study_id}/identity")
def identity(request: Request, access: SubjectIdentity, db: DbSession, config: Config) -> Response:
    values = records.get_identity(db, subject=access.subject, vault=config.vault)
    audit.record(
        db,
        actor=access.principal.username,
        action="view_identity",
        entity_type="subject",
        entity_id=access.subject.id,
        subject_study_id=access.subject.study_id,
        site_id=access.subject.site_id,
    )
    return render(
        request, "identity.html", {"study_id": access.subject.study_id, "identity": values}
    )
