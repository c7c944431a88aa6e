"""Pages: query lists (data resolution), the audit log viewer and CSV export, administration."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from ductal import accounts, records
from ductal.errors import DuctalError, NotFound
from ductal.models import Membership
from ductal.protocols.loader import builtin_ids, builtin_protocol
from ductal.signatures import hash_password
from ductal.web import views
from ductal.web.api.meta import admin_overview, audit_csv_response
from ductal.web.deps import Admin, Auditor, Config, DbSession, FormFields, Viewer
from ductal.web.pages._render import first, render

router = APIRouter(include_in_schema=False)


@router.get("/queries")
def query_list(
    request: Request,
    principal: Viewer,
    db: DbSession,
    status: Annotated[Literal["open", "answered", "closed", "all"], Query()] = "open",
    site: Annotated[str | None, Query(max_length=32)] = None,
    mine: Annotated[bool, Query()] = False,
) -> Response:
    codes = views.site_codes(db)
    site_id = next((i for i, c in codes.items() if c == site), None) if site else None
    stmt = views.query_list(
        principal,
        status=None if status == "all" else status,
        site_id=site_id,
        raised_by=principal.username if mine else None,
    ).limit(500)
    rows = [views.query_dict(q, codes) for q in db.scalars(stmt)]
    by_site: dict[str, int] = {}
    for r in rows:
        by_site[r["site"]] = by_site.get(r["site"], 0) + 1
    return render(
        request,
        "queries.html",
        {
            "rows": rows,
            "by_site": by_site,
            "sites": [codes[i] for i in principal.sites("view") if i in codes],
            "filters": {"status": status, "site": site or "", "mine": mine},
            "can_answer": principal.can("answer_query"),
            "can_close": principal.can("close_query"),
        },
    )


@router.get("/audit")
def audit_page(
    request: Request,
    principal: Auditor,
    db: DbSession,
    subject: Annotated[str | None, Query(max_length=32)] = None,
    record: Annotated[int | None, Query(ge=1)] = None,
    field: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    from ductal.models import AuditEntry

    stmt = views.audit_query(principal, subject=subject, record_id=record)
    stmt = stmt.order_by(None).order_by(AuditEntry.id.desc()).limit(500)
    codes = views.site_codes(db)
    rows = []
    for e in db.scalars(stmt):
        changes = views.audit_field_changes(e, field)
        if field and not changes:
            continue
        rows.append({**views.audit_dict(e, codes), "changes": changes})
    return render(
        request,
        "audit.html",
        {
            "rows": rows,
            "filters": {"subject": subject or "", "record": record or "", "field": field or ""},
        },
    )


@router.get("/audit.csv")
def audit_csv(
    principal: Auditor,
    config: Config,
    subject: Annotated[str | None, Query(max_length=32)] = None,
    record: Annotated[int | None, Query(ge=1)] = None,
    field: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    return audit_csv_response(config, principal, subject, record, field)


def _admin(request: Request, db: DbSession, **extra: Any) -> Response:
    status = int(extra.pop("status", 200))
    return render(
        request,
        "admin.html",
        {**admin_overview(db), "builtin": builtin_ids(), "problems": [], **extra},
        status=status,
    )


@router.get("/admin")
def admin(
    request: Request,
    principal: Admin,
    db: DbSession,
    msg: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    return _admin(request, db, msg=msg)


@router.post("/admin/{action}")
def admin_action(
    request: Request, action: str, principal: Admin, db: DbSession, form: FormFields
) -> Response:
    actor = principal.username
    try:
        with db.begin_nested():
            if action == "sites":
                accounts.create_site(
                    db,
                    code=first(form, "code")[:32],
                    name=first(form, "name")[:200],
                    contact_phone=first(form, "contact_phone")[:64] or None,
                    actor=actor,
                )
            elif action == "users":
                password = first(form, "password")
                accounts.create_user(
                    db,
                    username=first(form, "username")[:64],
                    full_name=first(form, "full_name")[:200],
                    language=first(form, "language", "en")
                    if first(form, "language") in ("en", "zh-Hans")
                    else "en",
                    password_hash=hash_password(password) if password else None,
                    actor=actor,
                )
            elif action == "memberships":
                site = accounts.get_site(db, first(form, "site"))
                if not principal.can("admin", site.id):
                    raise NotFound(f"no site {site.code!r}")
                accounts.grant(
                    db,
                    user=accounts.get_user(db, first(form, "username")),
                    site=site,
                    role=first(form, "role"),
                    actor=actor,
                )
            elif action == "revoke":
                text = first(form, "membership")
                m = db.get(Membership, int(text)) if text.isdigit() else None
                if m is None or not principal.can("admin", m.site_id):
                    raise NotFound("no such membership")
                accounts.revoke(
                    db, membership=m, actor=actor, reason=first(form, "reason") or "revoked"
                )
            elif action == "protocols":
                records.register_protocol(
                    db, protocol=builtin_protocol(first(form, "builtin")), actor=actor
                )
            else:
                raise NotFound(f"no admin action {action!r}")
    except DuctalError as exc:
        return _admin(request, db, problems=exc.problems, error=exc.message, status=exc.status)
    return RedirectResponse(f"/admin?msg={action}", status_code=303)
