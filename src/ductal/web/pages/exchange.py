"""Pages: the Exports page (statisticians, admins) — downloads with the export options, dry-run
checks of a REDCap dictionary or an ODM file and, for admins, imports with their problem report.

The work is done by the same helpers as the REST API (:mod:`ductal.web.api.exchange`).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response

from ductal.errors import DuctalError, Problem, ValidationError
from ductal.exchange import api as exchange
from ductal.exchange import odm, redcap_dictionary
from ductal.web import views
from ductal.web.api.exchange import FORMATS, Exporter, Importer, Options, run_export
from ductal.web.deps import Config, DbSession, FormFields
from ductal.web.pages._render import first, render

router = APIRouter(include_in_schema=False)


def _page(
    request: Request, db: DbSession, principal: Any, protocol_id: str, **extra: Any
) -> Response:
    exchange.registered_protocol(db, protocol_id)
    context: dict[str, Any] = {
        "protocol_id": protocol_id,
        "protocols": views.protocols(db, principal.language),
        "formats": FORMATS,
        "can_import": principal.can("import"),
        "can_identify": principal.can("admin"),
        "report": None,
        "report_title": None,
        "error": None,
        "problems": [],
    }
    context.update(extra)
    return render(request, "exchange_exports.html", context, status=extra.get("status", 200))


@router.get("/studies/{protocol_id}/exports")
def exports(request: Request, protocol_id: str, principal: Exporter, db: DbSession) -> Response:
    return _page(request, db, principal, protocol_id)


@router.get("/studies/{protocol_id}/exports/download")
def download(
    protocol_id: str,
    principal: Exporter,
    db: DbSession,
    config: Config,
    o: Options,
    fmt: Annotated[
        Literal["redcap", "odm", "fhir", "sas", "spss", "stata", "csv"], Query()
    ] = "csv",
) -> Response:
    content, media, name = run_export(
        db, principal, config, protocol_id=protocol_id, fmt=fmt, options=o
    )
    return Response(
        content, media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'}
    )


def _read(**uploads: UploadFile | None) -> dict[str, bytes]:
    """Return the contents of the files actually chosen (a form sends empty ones otherwise)."""
    return {k: u.file.read() for k, u in uploads.items() if u is not None and u.filename}


def _text(content: bytes | None, name: str) -> str | None:
    if content is None:
        return None
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(
            "the file is not UTF-8 text", problems=[Problem(name, "must be UTF-8 text")]
        ) from None


@router.post("/studies/{protocol_id}/exports/check")
def check(
    request: Request,
    protocol_id: str,
    principal: Exporter,
    db: DbSession,
    form: FormFields,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    kind = first(form, "kind", "dictionary")
    files = _read(file=file)
    try:
        if "file" not in files:
            raise ValidationError("choose a file", problems=[Problem("file", "is required")])
        if kind == "odm":
            report = odm.validate_odm(io.BytesIO(files["file"]))
        else:
            text = _text(files["file"], "file")
            assert text is not None
            report = redcap_dictionary.import_dictionary(text, partial=True).report
    except DuctalError as exc:
        return _page(request, db, principal, protocol_id, error=exc.message, problems=exc.problems)
    return _page(
        request, db, principal, protocol_id, report=report.to_json(), report_title=f"check:{kind}"
    )


@router.post("/studies/{protocol_id}/exports/import")
def do_import(
    request: Request,
    protocol_id: str,
    principal: Importer,
    db: DbSession,
    form: FormFields,
    file: Annotated[UploadFile | None, File()] = None,
    dictionary: Annotated[UploadFile | None, File()] = None,
    records: Annotated[UploadFile | None, File()] = None,
) -> Response:
    kind = first(form, "kind", "redcap")
    files = _read(file=file, dictionary=dictionary, records=records)
    partial = first(form, "partial") == "true"
    target = first(form, "protocol") or None
    try:
        with db.begin_nested():  # a refused import rolls back to here; the page still renders
            if kind == "odm":
                if "file" not in files:
                    raise ValidationError(
                        "choose a file", problems=[Problem("file", "is required")]
                    )
                with tempfile.TemporaryDirectory(prefix="ductal-odm-") as tmp:
                    path = Path(tmp) / "import.xml"
                    path.write_bytes(files["file"])
                    proto, report = exchange.import_odm_file(
                        db, path=path, actor=principal.username, protocol_id=target, partial=partial
                    )
            else:
                dictionary_text = _text(files.get("dictionary"), "dictionary")
                records_csv = _text(files.get("records"), "records")
                if dictionary_text is None and records_csv is None:
                    raise ValidationError(
                        "nothing to import",
                        problems=[Problem("dictionary", "give a dictionary or records")],
                    )
                proto, report = exchange.import_redcap(
                    db,
                    actor=principal.username,
                    dictionary=dictionary_text,
                    records_csv=records_csv,
                    protocol_id=target or (protocol_id if dictionary_text is None else None),
                    partial=partial,
                )
    except DuctalError as exc:
        return _page(
            request,
            db,
            principal,
            protocol_id,
            error=exc.message,
            problems=exc.problems,
            status=exc.status,
        )
    return _page(
        request,
        db,
        principal,
        protocol_id,
        report={"protocol": proto.id, **report.to_json()},
        report_title=f"import:{kind}",
    )
