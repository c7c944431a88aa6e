"""API: who am I, protocols, sites, dashboard, audit trail (JSON and CSV) and administration."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import Field, StrictStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import accounts, records
from ductal.errors import NotFound, Problem, ValidationError
from ductal.models import AuditEntry, Membership, ProtocolVersion, Site, User
from ductal.protocols.loader import builtin_protocol
from ductal.signatures import hash_password
from ductal.web import views
from ductal.web.api._common import ERROR_RESPONSES, MAX_PAGE, Body, stream_page
from ductal.web.deps import Admin, Auditor, Authenticated, Config, DbSession, RowId, Viewer

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/me", tags=["account"], summary="The signed-in user and their roles by site")
def me(principal: Authenticated, db: DbSession) -> dict[str, Any]:
    codes = views.site_codes(db)
    return {
        "username": principal.username,
        "full_name": principal.full_name,
        "language": principal.language,
        "roles": {codes[s]: sorted(r) for s, r in sorted(principal.roles.items())},
    }


@router.get("/protocols", tags=["protocols"], summary="Registered protocols (latest versions)")
def list_protocols(principal: Viewer, db: DbSession) -> dict[str, Any]:
    items = views.protocols(db, principal.language)
    return {"items": items, "count": len(items), "next": None}


@router.get(
    "/protocols/{protocol_id}",
    tags=["protocols"],
    summary="A protocol definition, branching logic included as JSON syntax trees",
)
def get_protocol(protocol_id: str, principal: Viewer, db: DbSession) -> dict[str, Any]:
    pv = records.latest_protocol_version(db, protocol_id)
    proto = records.protocol_of(pv)
    return {
        "id": proto.id,
        "version": pv.version,
        "sha256": pv.sha256,
        "definition": pv.definition,
        "forms": {
            f.key: [views.field_spec(fd, principal.language) for fd in f.fields]
            for f in proto.forms
        },
    }


@router.get("/sites", tags=["sites"], summary="Your sites and your roles there")
def list_sites(principal: Authenticated, db: DbSession) -> dict[str, Any]:
    items = [
        {"code": s.code, "name": s.name, "roles": sorted(principal.roles.get(s.id, set()))}
        for s in db.scalars(select(Site).order_by(Site.code))
        if principal.belongs_to(s.id)
    ]
    return {"items": items, "count": len(items), "next": None}


@router.get(
    "/protocols/{protocol_id}/dashboard",
    tags=["protocols"],
    summary="Enrolment per site against target, CONSORT counts, visits due, queries, activity",
)
def dashboard(protocol_id: str, principal: Viewer, db: DbSession) -> dict[str, Any]:
    return views.dashboard(db, principal, protocol_id)


def _audit_stmt(principal: Any, subject: str | None, record: int | None, field: str | None) -> Any:
    stmt = views.audit_query(principal, subject=subject, record_id=record)
    return stmt


@router.get("/audit", tags=["audit"], summary="Audit entries at your sites (paginated, streamed)")
def audit_log(
    principal: Auditor,
    config: Config,
    db: DbSession,
    subject: Annotated[str | None, Query(max_length=32)] = None,
    record: Annotated[int | None, Query(ge=1)] = None,
    field: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[int | None, Query(ge=0, description="cursor: last entry id")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> StreamingResponse:
    stmt = views.audit_query(principal, subject=subject, record_id=record)
    if after is not None:
        stmt = stmt.where(AuditEntry.id > after)
    codes = views.site_codes(db)

    def to_dict(e: AuditEntry, _db: Session) -> dict[str, Any]:
        out = views.audit_dict(e, codes)
        out["changes"] = [
            {"field": k, "before": b, "after": a} for k, b, a in views.audit_field_changes(e, field)
        ]
        return out

    return stream_page(config.engine, stmt, to_dict, limit=limit, cursor=lambda e: e.id)


def _cell(text: str) -> str:
    # a spreadsheet would run a cell starting with one of these as a formula
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def audit_csv_response(
    config: Any, principal: Any, subject: str | None, record: int | None, field: str | None
) -> StreamingResponse:
    """Return the audit entries as CSV, one row per changed value, streamed."""
    stmt = views.audit_query(principal, subject=subject, record_id=record)

    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(
            [
                "id",
                "at_utc",
                "actor",
                "action",
                "entity",
                "subject",
                "field",
                "before",
                "after",
                "reason",
            ]
        )
        with Session(config.engine) as session:
            entries = session.scalars(stmt.execution_options(yield_per=500))
            try:
                for e in entries:
                    changes = views.audit_field_changes(e, field) or (
                        [] if field else [("", None, None)]
                    )
                    for k, b, a in changes:
                        writer.writerow(
                            [
                                e.id,
                                e.occurred_at.isoformat(timespec="seconds"),
                                _cell(e.actor),
                                e.action,
                                f"{e.entity_type}:{e.entity_id}",
                                e.subject_study_id or "",
                                k,
                                "" if b is None else _cell(json.dumps(b, ensure_ascii=False)),
                                "" if a is None else _cell(json.dumps(a, ensure_ascii=False)),
                                _cell(e.reason or ""),
                            ]
                        )
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
            finally:
                entries.close()
        yield buffer.getvalue()

    return StreamingResponse(
        generate(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="ductal-audit.csv"'},
    )


@router.get("/audit.csv", tags=["audit"], summary="Audit entries as CSV (one row per value)")
def audit_csv(
    principal: Auditor,
    config: Config,
    subject: Annotated[str | None, Query(max_length=32)] = None,
    record: Annotated[int | None, Query(ge=1)] = None,
    field: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    return audit_csv_response(config, principal, subject, record, field)


# --- administration --------------------------------------------------------------------------


class SiteIn(Body):
    code: StrictStr = Field(min_length=1, max_length=32)
    name: StrictStr = Field(min_length=1, max_length=200)
    contact_phone: StrictStr | None = Field(default=None, max_length=64)


class UserIn(Body):
    username: StrictStr = Field(min_length=1, max_length=64)
    full_name: StrictStr = Field(min_length=1, max_length=200)
    email: StrictStr | None = Field(default=None, max_length=200)
    language: Literal["en", "zh-Hans"] = "en"
    password: StrictStr | None = Field(default=None, max_length=1024)


class MembershipIn(Body):
    username: StrictStr = Field(max_length=64)
    site: StrictStr = Field(max_length=32)
    role: Literal["admin", "investigator", "coordinator", "monitor", "statistician", "read_only"]


class RevokeIn(Body):
    reason: StrictStr = Field(min_length=1, max_length=2000)


class ProtocolIn(Body):
    builtin: StrictStr = Field(max_length=64)


def admin_overview(db: Session) -> dict[str, Any]:
    """Return sites, users with memberships, and protocol versions for the admin page."""
    sites = [
        {"id": s.id, "code": s.code, "name": s.name, "contact_phone": s.contact_phone}
        for s in db.scalars(select(Site).order_by(Site.code))
    ]
    codes = {s["id"]: s["code"] for s in sites}
    users = []
    for u in db.scalars(select(User).order_by(User.username)):
        users.append(
            {
                "username": u.username,
                "full_name": u.full_name,
                "language": u.language,
                "active": u.is_active,
                "has_password": bool(u.password_hash),
                "memberships": [
                    {"id": m.id, "site": codes.get(m.site_id), "role": m.role}
                    for m in db.scalars(
                        select(Membership).where(Membership.user_id == u.id).order_by(Membership.id)
                    )
                ],
            }
        )
    versions = [
        {
            "protocol": pv.protocol_id,
            "version": pv.version,
            "sha256": pv.sha256,
            "loaded_at": pv.loaded_at.isoformat(timespec="seconds"),
        }
        for pv in db.scalars(select(ProtocolVersion).order_by(ProtocolVersion.id))
    ]
    return {"sites": sites, "users": users, "protocol_versions": versions}


@router.get("/admin", tags=["admin"], summary="Sites, users, memberships and protocol versions")
def admin_get(principal: Admin, db: DbSession) -> dict[str, Any]:
    return admin_overview(db)


@router.post("/admin/sites", tags=["admin"], status_code=201, summary="Create a site")
def admin_site(body: SiteIn, principal: Admin, db: DbSession) -> dict[str, Any]:
    site = accounts.create_site(
        db,
        code=body.code,
        name=body.name,
        contact_phone=body.contact_phone,
        actor=principal.username,
    )
    return {"code": site.code, "name": site.name}


@router.post("/admin/users", tags=["admin"], status_code=201, summary="Create a user")
def admin_user(body: UserIn, principal: Admin, db: DbSession) -> dict[str, Any]:
    hashed = hash_password(body.password) if body.password else None
    user = accounts.create_user(
        db,
        username=body.username,
        full_name=body.full_name,
        email=body.email,
        language=body.language,
        password_hash=hashed,
        actor=principal.username,
    )
    return {"username": user.username, "full_name": user.full_name}


@router.post("/admin/memberships", tags=["admin"], status_code=201, summary="Grant a role")
def admin_grant(body: MembershipIn, principal: Admin, db: DbSession) -> dict[str, Any]:
    site = accounts.get_site(db, body.site)
    if not principal.can("admin", site.id):
        raise NotFound(f"no site {body.site!r}")
    user = accounts.get_user(db, body.username)
    m = accounts.grant(db, user=user, site=site, role=body.role, actor=principal.username)
    return {"id": m.id, "username": user.username, "site": site.code, "role": m.role}


@router.post("/admin/memberships/{membership_id}/revoke", tags=["admin"], summary="Revoke a role")
def admin_revoke(
    membership_id: RowId, body: RevokeIn, principal: Admin, db: DbSession
) -> dict[str, Any]:
    m = db.get(Membership, membership_id)
    if m is None or not principal.can("admin", m.site_id):
        raise NotFound(f"no membership {membership_id}")
    accounts.revoke(db, membership=m, actor=principal.username, reason=body.reason)
    return {"revoked": membership_id}


@router.post(
    "/admin/protocols", tags=["admin"], status_code=201, summary="Register a built-in protocol"
)
def admin_protocol(body: ProtocolIn, principal: Admin, db: DbSession) -> dict[str, Any]:
    try:
        proto = builtin_protocol(body.builtin)
    except (KeyError, NotFound) as exc:
        raise ValidationError(
            "unknown protocol", problems=[Problem("builtin", "is not a built-in protocol")]
        ) from exc
    pv = records.register_protocol(db, protocol=proto, actor=principal.username)
    return {"protocol": pv.protocol_id, "version": pv.version, "sha256": pv.sha256}
