"""Pages: the efficacy report (``ductal.reports``) generated and shown in the app.

The report is aggregate over every site of the protocol, so it is shown only to users who may
see reports at every site that has subjects in the protocol. It is built in the background after
the request's transaction has closed, into ``DATA_DIR/reports/web/<protocol>/<lang>/``.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select

from ductal import records
from ductal.errors import NotFound, PermissionDenied
from ductal.models import Subject
from ductal.web import views
from ductal.web.access import Principal
from ductal.web.deps import Config, DbSession, Reporter, WebConfig
from ductal.web.pages._render import render

router = APIRouter(include_in_schema=False)
_SERVED = {".html", ".png", ".pdf", ".csv"}


def _lang(principal: Principal) -> str:
    return "zh" if principal.language.startswith("zh") else "en"


def _folder(config: WebConfig, protocol_id: str, lang: str) -> Path:
    return config.settings.reports_dir / "web" / protocol_id / lang


def _check_all_sites(db: DbSession, principal: Principal, protocol_id: str) -> None:
    records.latest_protocol_version(db, protocol_id)
    sites = set(
        db.scalars(select(Subject.site_id).where(Subject.protocol_id == protocol_id).distinct())
    )
    if any(not principal.can("reports", s) for s in sites):
        raise PermissionDenied(
            "the efficacy report pools every site of this protocol; it is shown to users who may "
            "see reports at all of them"
        )


def _build(config: WebConfig, protocol_id: str, lang: str) -> None:
    from ductal.reports.build import build_report

    target = _folder(config, protocol_id, lang)
    scratch = target.with_name(f"{lang}.building")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        build_report(
            config.engine,
            scratch,
            protocol_ids=[protocol_id],
            lang=lang,
            pdf=True,
            database_label=config.settings.describe_database(),
        )
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@router.get("/studies/{protocol_id}/reports")
def reports(
    request: Request, protocol_id: str, principal: Reporter, db: DbSession, config: Config
) -> Response:
    _check_all_sites(db, principal, protocol_id)
    lang = _lang(principal)
    folder = _folder(config, protocol_id, lang)
    html = folder / "report.html"
    context: dict[str, Any] = {
        "protocol_id": protocol_id,
        "protocols": views.protocols(db, principal.language),
        "installed": True,
        "ready": html.exists(),
        "building": folder.with_name(f"{lang}.building").exists(),
        "pdf": (folder / "report.pdf").exists(),
        "generated": (
            dt.datetime.fromtimestamp(html.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
            if html.exists()
            else None
        ),
    }
    return render(request, "reports.html", context)


@router.post("/studies/{protocol_id}/reports")
def generate(
    protocol_id: str,
    principal: Reporter,
    db: DbSession,
    config: Config,
    background: BackgroundTasks,
) -> Response:
    _check_all_sites(db, principal, protocol_id)
    lang = _lang(principal)
    _folder(config, protocol_id, lang).parent.mkdir(parents=True, exist_ok=True)
    # runs after the response, when this request's transaction has closed
    background.add_task(_build, config, protocol_id, lang)
    return RedirectResponse(f"/studies/{protocol_id}/reports", status_code=303)


@router.get("/studies/{protocol_id}/reports/view/{path:path}")
def report_file(
    protocol_id: str, path: str, principal: Reporter, db: DbSession, config: Config
) -> Response:
    _check_all_sites(db, principal, protocol_id)
    folder = _folder(config, protocol_id, _lang(principal)).resolve()
    wanted = (folder / path).resolve()
    if not wanted.is_relative_to(folder) or wanted.suffix not in _SERVED or not wanted.is_file():
        raise NotFound(f"no report file {path!r}")
    return FileResponse(wanted)
