"""API: data exchange (``ductal.exchange.api``) — exports as downloads, imports, dry-run checks.

Exports are pseudonymous by default and take the options of the ``ductal export`` flags; they
hold the subjects of the sites where the user may export (admins and statisticians). An
identified FHIR export is for administrators of every site exported, and each disclosure is
audited. Imports (administrators) are all or nothing unless ``partial`` is set; their problem
report has the shape of ``ImportReport.to_json()``.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal.errors import Problem, ValidationError
from ductal.exchange import api as exchange
from ductal.exchange import odm, redcap_dictionary
from ductal.exchange.deidentify import DeidOptions
from ductal.models import Subject
from ductal.web.access import Principal
from ductal.web.api._common import ERROR_RESPONSES
from ductal.web.deps import Config, DbSession, SubjectAccess, require, subject_access

router = APIRouter(tags=["exchange"], responses=ERROR_RESPONSES)

Exporter = Annotated[Principal, Depends(require("export"))]
Importer = Annotated[Principal, Depends(require("import"))]
SubjectExporter = Annotated[SubjectAccess, Depends(subject_access("export"))]

FORMATS = ("redcap", "odm", "fhir", "sas", "spss", "stata", "csv")
MAX_UPLOAD_TEXT = 50_000_000


@dataclass(frozen=True)
class ExportOptions:
    """The options of an export, as the ``ductal export`` flags."""

    hash_ids: bool = False
    shift_dates: bool = False
    max_shift_days: int = 180
    drop_free_text: bool = False
    wide: bool = False
    dataset: Literal["forms", "analysis"] = "forms"
    fhir_version: Literal["R4B", "R5"] = "R4B"
    audit: bool = False
    identified: bool = False

    def deid(self) -> DeidOptions:
        return DeidOptions(
            hash_ids=self.hash_ids,
            shift_dates=self.shift_dates,
            max_shift_days=self.max_shift_days,
            drop_free_text=self.drop_free_text,
        )


def export_options(
    hash_ids: Annotated[bool, Query(description="HMAC study ids with a one-off salt")] = False,
    shift_dates: Annotated[bool, Query(description="shift each subject's dates")] = False,
    max_shift_days: Annotated[int, Query(ge=1, le=3650)] = 180,
    drop_free_text: Annotated[bool, Query(description="leave text fields out")] = False,
    wide: Annotated[bool, Query(description="one row per subject (stat formats)")] = False,
    dataset: Annotated[Literal["forms", "analysis"], Query()] = "forms",
    fhir_version: Annotated[Literal["R4B", "R5"], Query()] = "R4B",
    audit: Annotated[bool, Query(description="ODM: audit records and signatures")] = False,
    identified: Annotated[bool, Query(description="FHIR: names (admins only; audited)")] = False,
) -> ExportOptions:
    return ExportOptions(
        hash_ids=hash_ids,
        shift_dates=shift_dates,
        max_shift_days=max_shift_days,
        drop_free_text=drop_free_text,
        wide=wide,
        dataset=dataset,
        fhir_version=fhir_version,
        audit=audit,
        identified=identified,
    )


Options = Annotated[ExportOptions, Depends(export_options)]


def _scope(db: Session, principal: Principal, protocol_id: str) -> tuple[list[str] | None, bool]:
    """Return the study ids the user may export (None: all) and whether they are admin at all."""
    exchange.registered_protocol(db, protocol_id)
    rows = db.execute(
        select(Subject.study_id, Subject.site_id)
        .where(Subject.protocol_id == protocol_id)
        .order_by(Subject.study_id)
    ).all()
    sites = {site for _, site in rows}
    admin_everywhere = all(principal.can("admin", s) for s in sites)
    if all(principal.can("export", s) for s in sites):
        return None, admin_everywhere
    return [sid for sid, site in rows if principal.can("export", site)], admin_everywhere


def run_export(
    db: Session,
    principal: Principal,
    config: Any,
    *,
    protocol_id: str,
    fmt: str,
    options: ExportOptions,
    study_ids: list[str] | None = None,
) -> tuple[bytes, str, str]:
    """Run one export into a temporary folder; return (content, media type, file name)."""
    if fmt not in FORMATS:
        raise ValidationError("unknown format", problems=[Problem("format", ", ".join(FORMATS))])
    scoped, admin_everywhere = _scope(db, principal, protocol_id)
    if study_ids is None:
        study_ids = scoped
    if options.identified and fmt != "fhir":
        raise ValidationError(
            "only the FHIR export can be identified",
            problems=[Problem("identified", "applies to the FHIR export only")],
        )
    deid = options.deid()
    actor = principal.username
    stem = f"{protocol_id}-{fmt}"
    with tempfile.TemporaryDirectory(prefix="ductal-export-") as tmp:
        out = Path(tmp) / stem
        if fmt == "redcap":
            exchange.export_redcap(
                db, protocol_id=protocol_id, out=out, options=deid, actor=actor, study_ids=study_ids
            )
        elif fmt == "odm":
            target = out / f"{protocol_id}.xml"
            exchange.export_odm(
                db,
                protocol_id=protocol_id,
                out=target,
                options=deid,
                include_audit=options.audit,
                actor=actor,
                study_ids=study_ids,
            )
        elif fmt == "fhir":
            exchange.export_fhir(
                db,
                protocol_id=protocol_id,
                out=out,
                version=options.fhir_version,
                options=None if options.identified else deid,
                actor=actor,
                study_ids=study_ids,
                reveal_identity=options.identified,
                actor_role="admin" if admin_everywhere else "statistician",
                vault=config.vault,
            )
        else:
            exchange.export_stat(
                db,
                protocol_id=protocol_id,
                out=out,
                fmt=fmt,  # type: ignore[arg-type]  # checked against FORMATS above
                options=deid,
                wide=options.wide,
                dataset=options.dataset,
                actor=actor,
                study_ids=study_ids,
            )
        out.mkdir(parents=True, exist_ok=True)
        return exchange.zip_folder(out), "application/zip", f"{stem}.zip"


def _download(content: bytes, media: str, name: str) -> Response:
    return Response(
        content, media_type=media, headers={"content-disposition": f'attachment; filename="{name}"'}
    )


def _export_route(fmt: str) -> None:
    def export(
        protocol_id: str, principal: Exporter, db: DbSession, config: Config, o: Options
    ) -> Response:
        return _download(
            *run_export(db, principal, config, protocol_id=protocol_id, fmt=fmt, options=o)
        )

    export.__name__ = f"export_{fmt}"
    router.add_api_route(
        f"/protocols/{{protocol_id}}/export/{fmt}",
        export,
        methods=["GET"],
        response_class=Response,
        summary=f"Export the study as {fmt.upper()} (a zip with manifest.json; pseudonymous)",
    )


for _fmt in FORMATS:
    _export_route(_fmt)


@router.get(
    "/subjects/{study_id}/fhir",
    summary="One subject as a FHIR Bundle (pseudonymous; identified for admins only)",
)
def subject_fhir(access: SubjectExporter, db: DbSession, config: Config, o: Options) -> Response:
    import json

    principal = access.principal
    subject = access.subject
    with tempfile.TemporaryDirectory(prefix="ductal-fhir-") as tmp:
        result = exchange.export_fhir(
            db,
            protocol_id=subject.protocol_id,
            out=Path(tmp),
            version=o.fhir_version,
            options=None if o.identified else o.deid(),
            actor=principal.username,
            study_ids=[subject.study_id],
            reveal_identity=o.identified,
            actor_role="admin" if principal.can("admin", subject.site_id) else "statistician",
            vault=config.vault,
        )
        bundles = [p for p in result.files if p.name != "manifest.json"]
        body = json.loads(bundles[0].read_text(encoding="utf-8")) if bundles else {}
    return Response(
        json.dumps(body, ensure_ascii=False), media_type="application/fhir+json; charset=utf-8"
    )


# --- imports --------------------------------------------------------------------------------


async def _text(upload: UploadFile | None, name: str) -> str | None:
    if upload is None:
        return None
    raw = await upload.read()
    if len(raw) > MAX_UPLOAD_TEXT:
        raise ValidationError("file too large", problems=[Problem(name, "at most 50 MB")])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(
            "the file is not UTF-8 text", problems=[Problem(name, "must be UTF-8 text")]
        ) from None


def import_result(protocol_id: str, report: Any) -> dict[str, Any]:
    return {"protocol": protocol_id, **report.to_json()}


@router.post(
    "/protocols/import/redcap",
    summary="Import a REDCap data dictionary and/or records CSV (all or nothing unless partial)",
)
async def import_redcap(
    principal: Importer,
    db: DbSession,
    dictionary: Annotated[UploadFile | None, File()] = None,
    records: Annotated[UploadFile | None, File()] = None,
    protocol: Annotated[str | None, Form(max_length=64)] = None,
    partial: Annotated[bool, Form()] = False,
    site: Annotated[str | None, Form(max_length=32)] = None,
) -> dict[str, Any]:
    dictionary_text = await _text(dictionary, "dictionary")
    records_text = await _text(records, "records")
    if dictionary_text is None and records_text is None:
        raise ValidationError(
            "nothing to import", problems=[Problem("dictionary", "give a dictionary or records")]
        )
    proto, report = exchange.import_redcap(
        db,
        actor=principal.username,
        dictionary=dictionary_text,
        records_csv=records_text,
        protocol_id=protocol or None,
        partial=partial,
        default_site=site or None,
    )
    return import_result(proto.id, report)


@router.post(
    "/protocols/import/odm",
    summary="Import a CDISC ODM 1.3.2 file (all or nothing unless partial)",
)
async def import_odm(
    principal: Importer,
    db: DbSession,
    file: Annotated[UploadFile, File()],
    protocol: Annotated[str | None, Form(max_length=64)] = None,
    partial: Annotated[bool, Form()] = False,
    site: Annotated[str | None, Form(max_length=32)] = None,
) -> dict[str, Any]:
    content = await file.read()
    with tempfile.TemporaryDirectory(prefix="ductal-odm-") as tmp:
        path = Path(tmp) / "import.xml"
        path.write_bytes(content)
        proto, report = exchange.import_odm_file(
            db,
            path=path,
            actor=principal.username,
            protocol_id=protocol or None,
            partial=partial,
            default_site=site or None,
        )
    return import_result(proto.id, report)


@router.post(
    "/exchange/check/dictionary",
    summary="Check a REDCap data dictionary without importing it (every problem listed)",
)
async def check_dictionary(
    principal: Exporter, file: Annotated[UploadFile, File()]
) -> dict[str, Any]:
    text = await _text(file, "file")
    assert text is not None
    result = redcap_dictionary.import_dictionary(text, partial=True)
    out: dict[str, Any] = result.report.to_json()
    out["forms"] = [f.key for f in result.protocol.forms] if result.protocol else []
    return out


@router.post(
    "/exchange/check/odm",
    summary="Check an ODM file against the schema, OID references and code lists (no import)",
)
async def check_odm(principal: Exporter, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    content = await file.read()
    report: dict[str, Any] = odm.validate_odm(io.BytesIO(content)).to_json()
    return report
