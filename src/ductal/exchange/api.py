"""Exports and imports as single library calls: what the CLI and the web API both call.

Each export reads the study from the database (never the identity vault unless an
administrator asks for an identified FHIR export), de-identifies every subject, writes the
files and a ``manifest.json`` saying what was done, and returns an :class:`ExportResult`. Each
import runs in the caller's session: either everything valid is written or nothing (unless
``partial``). :func:`zip_folder` turns an export folder into bytes for a download.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import audit, records
from ductal.backup import evidence_stamp
from ductal.errors import NotFound, PermissionDenied, Problem, ValidationError
from ductal.exchange import fhir, odm, redcap_dictionary, redcap_records, statpackages
from ductal.exchange.deidentify import Deidentifier, DeidOptions
from ductal.exchange.manifest import MANIFEST_NAME, build_manifest, write_manifest
from ductal.exchange.report import ImportReport
from ductal.exchange.study_data import SubjectData, collect_subjects
from ductal.models import Site, Subject
from ductal.protocols.model import Protocol
from ductal.vault import Vault

__all__ = [
    "ExportResult",
    "export_fhir",
    "export_odm",
    "export_redcap",
    "export_stat",
    "import_odm_file",
    "import_redcap",
    "registered_protocol",
    "zip_folder",
]

Progress = Callable[[int], None] | None


@dataclass
class ExportResult:
    """Where an export went, what it holds and its manifest."""

    path: Path
    files: list[Path]
    subjects: int
    manifest: dict[str, Any] = field(default_factory=dict)


def registered_protocol(session: Session, protocol_id: str) -> Protocol:
    """Return the latest registered version of ``protocol_id``."""
    return records.protocol_of(records.latest_protocol_version(session, protocol_id))


def _subjects(
    session: Session, protocol: Protocol, deid: Deidentifier, study_ids: list[str] | None
) -> list[SubjectData]:
    return [deid.apply(s) for s in collect_subjects(session, protocol.id, study_ids=study_ids)]


def _finish(
    session: Session,
    fmt: str,
    protocol: Protocol,
    root: Path,
    files: list[Path],
    deid: Deidentifier,
    subjects: int,
    actor: str | None,
    notes: list[str],
    manifest_path: Path,
) -> ExportResult:
    manifest = build_manifest(
        export_format=fmt,
        protocol=protocol,
        files=files,
        root=root,
        deidentification=deid.summary(),
        subjects=subjects,
        actor=actor,
        notes=notes,
    )
    # the audit chain head at the time of export, so a copy can be checked against the live
    # database later (`ductal evidence check MANIFEST`)
    manifest["evidence"] = evidence_stamp(session)
    write_manifest(manifest, manifest_path)
    return ExportResult(
        path=root, files=[*files, manifest_path], subjects=subjects, manifest=manifest
    )


def _deidentifier(
    protocol: Protocol, options: DeidOptions | None, rng: np.random.Generator | None
) -> Deidentifier:
    return Deidentifier(protocol, options or DeidOptions(), rng=rng)


def export_redcap(
    session: Session,
    *,
    protocol_id: str,
    out: str | Path,
    options: DeidOptions | None = None,
    actor: str | None = None,
    study_ids: list[str] | None = None,
    rng: np.random.Generator | None = None,
    progress: Progress = None,
) -> ExportResult:
    """Write ``data_dictionary.csv`` and ``records.csv`` (and the manifest) into folder ``out``."""
    protocol = registered_protocol(session, protocol_id)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    deid = _deidentifier(protocol, options, rng)
    dictionary = folder / "data_dictionary.csv"
    dictionary.write_text(redcap_dictionary.dictionary_csv(protocol), encoding="utf-8")
    records_path = folder / "records.csv"
    subjects = (deid.apply(s) for s in collect_subjects(session, protocol.id, study_ids=study_ids))
    with records_path.open("w", newline="", encoding="utf-8") as stream:
        count = redcap_records.write_records(protocol, subjects, stream, progress=progress)
    _, notes = redcap_dictionary.dictionary_rows(protocol)
    return _finish(
        session,
        "redcap",
        protocol,
        folder,
        [dictionary, records_path],
        deid,
        count,
        actor,
        notes,
        folder / MANIFEST_NAME,
    )


def export_odm(
    session: Session,
    *,
    protocol_id: str,
    out: str | Path,
    options: DeidOptions | None = None,
    include_audit: bool = False,
    actor: str | None = None,
    study_ids: list[str] | None = None,
    rng: np.random.Generator | None = None,
    progress: Progress = None,
) -> ExportResult:
    """Write one ODM 1.3.2 XML file ``out`` (manifest beside it), checked against the schema.

    ``include_audit`` adds each form's latest AuditRecord and live Signature; with shifted dates
    or hashed ids they are left out, since their time stamps and reasons would undo the
    de-identification.
    """
    protocol = registered_protocol(session, protocol_id)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    deid = _deidentifier(protocol, options, rng)
    notes: list[str] = []
    raw = list(collect_subjects(session, protocol.id, study_ids=study_ids))
    trail = None
    opts = deid.options
    if include_audit:
        if opts.shift_dates or opts.hash_ids or opts.drop_free_text:
            notes.append(
                "audit records and signatures left out: they would undo the "
                "de-identification (time stamps, reasons, ids)"
            )
        else:
            trail = odm.audit_trail(
                session, [f.record_id for s in raw for f in s.forms if f.record_id is not None]
            )
            notes.append("each form carries its latest audit record and live signature")
    site_codes = list(session.scalars(select(Site.code).order_by(Site.code)))
    with path.open("w", encoding="utf-8") as stream:
        count = odm.write_odm(
            protocol,
            (deid.apply(s) for s in raw),
            stream,
            trail=trail,
            sites=site_codes,
            progress=progress,
        )
    report = odm.validate_odm(path)
    if report.errors:
        path.unlink()
        raise ValidationError(
            f"the ODM export of {protocol.id} failed its own validation (a defect in ductal)",
            problems=[Problem(f"{i.where} {i.item}".strip(), i.message) for i in report.errors],
        )
    notes.append("validated against the CDISC ODM 1.3.2 schema, OID references and code lists")
    manifest = path.with_name(path.stem + ".manifest.json")
    return _finish(
        session, "odm", protocol, path.parent, [path], deid, count, actor, notes, manifest
    )


def export_fhir(
    session: Session,
    *,
    protocol_id: str,
    out: str | Path,
    version: fhir.FhirVersion = "R4B",
    options: DeidOptions | None = None,
    actor: str | None = None,
    study_ids: list[str] | None = None,
    reveal_identity: bool = False,
    actor_role: str | None = None,
    vault: Vault | None = None,
    rng: np.random.Generator | None = None,
    progress: Progress = None,
) -> ExportResult:
    """Write one Bundle JSON per subject into folder ``out``.

    The Patient is pseudonymous unless ``reveal_identity`` is asked by an administrator
    (``actor_role == "admin"``, with the vault); each disclosure is then audited.
    """
    protocol = registered_protocol(session, protocol_id)
    identities: dict[str, dict[str, Any]] | None = None
    notes = [f"FHIR {version}; validated with fhir.resources and required-binding checks"]
    if reveal_identity:
        if actor_role != "admin" or not actor:
            raise PermissionDenied("only an administrator may export identified FHIR records")
        if vault is None:
            raise ValidationError("an identified export needs the identity vault")
        if options is not None and (options.hash_ids or options.shift_dates):
            raise ValidationError("an identified export cannot also hash ids or shift dates")
        options = DeidOptions(
            keep_identifier_fields=True, drop_free_text=options.drop_free_text if options else False
        )
        identities = {}
        query = select(Subject).where(Subject.protocol_id == protocol.id)
        for subject in session.scalars(query.order_by(Subject.study_id)):
            if study_ids is not None and subject.study_id not in study_ids:
                continue
            identity = records.get_identity(session, subject=subject, vault=vault)
            if identity:
                identities[subject.study_id] = dict(identity)
                audit.record(
                    session,
                    actor=actor,
                    action="disclose",
                    entity_type="identity",
                    entity_id=subject.id,
                    after={"fields": sorted(identity), "to": "FHIR export"},
                    reason="identified FHIR export by an administrator",
                    subject_study_id=subject.study_id,
                    site_id=subject.site_id,
                )
        notes.append("IDENTIFIED export: Patient names and identifiers included (audited)")
    deid = _deidentifier(protocol, options, rng)
    folder = Path(out)
    subjects = (deid.apply(s) for s in collect_subjects(session, protocol.id, study_ids=study_ids))
    paths = fhir.write_bundles(
        protocol, subjects, folder, version=version, identities=identities, progress=progress
    )
    return _finish(
        session,
        f"fhir-{version}",
        protocol,
        folder,
        paths,
        deid,
        len(paths),
        actor,
        notes,
        folder / MANIFEST_NAME,
    )


def _analysis_tables(
    session: Session, protocol: Protocol
) -> dict[str, tuple[pd.DataFrame, statpackages.Codebook]]:
    """Return the analysis datasets of :mod:`ductal.outcomes` (subjects, assessments, AEs)."""
    from ductal.outcomes.dataset import derive
    from ductal.outcomes.extract import extract_study

    data = derive(extract_study(session, protocol.id))
    tables: dict[str, tuple[pd.DataFrame, statpackages.Codebook]] = {}
    for name, frame in (
        ("subjects", data.subjects),
        ("assessments", data.assessments),
        ("adverse_events", data.adverse_events),
    ):
        book = statpackages.Codebook(
            label=f"{protocol.id} analysis dataset: {name.replace('_', ' ')}",
            variable_labels={c: c.replace("_", " ") for c in frame.columns},
        )
        tables[name] = (frame, book)
    return tables


def export_stat(
    session: Session,
    *,
    protocol_id: str,
    out: str | Path,
    fmt: statpackages.StatFormat,
    options: DeidOptions | None = None,
    wide: bool = False,
    dataset: str = "forms",
    actor: str | None = None,
    study_ids: list[str] | None = None,
    rng: np.random.Generator | None = None,
    progress: Progress = None,
) -> ExportResult:
    """Write the raw forms (``dataset="forms"``) or the analysis dataset as ``fmt`` into ``out``."""
    protocol = registered_protocol(session, protocol_id)
    deid = _deidentifier(protocol, options, rng)
    folder = Path(out)
    notes: list[str] = []
    if dataset == "analysis":
        if deid.options.hash_ids or deid.options.shift_dates:
            raise ValidationError("hashing ids and shifting dates apply to raw forms only")
        tables = _analysis_tables(session, protocol)
        count = len(tables["subjects"][0])
        notes.append(
            "analysis datasets from ductal.outcomes (subjects, assessments, adverse "
            "events); variable labels are the column names"
        )
    else:
        subjects = _subjects(session, protocol, deid, study_ids)
        if progress is not None:
            progress(len(subjects))
        tables = statpackages.form_tables(protocol, subjects, wide=wide)
        count = len(subjects)
        notes.append(
            "one table per form"
            + (
                ", wide (one row per subject)"
                if wide
                else ", keyed by study_id, event, event_instance, instance"
            )
        )
    paths = statpackages.write_tables(tables, folder, fmt)
    return _finish(
        session, fmt, protocol, folder, paths, deid, count, actor, notes, folder / MANIFEST_NAME
    )


# --------------------------------------------------------------------------------------------
# Imports


def import_redcap(
    session: Session,
    *,
    actor: str,
    dictionary: str | None = None,
    records_csv: str | None = None,
    protocol_id: str | None = None,
    partial: bool = False,
    progress: Progress = None,
    default_site: str | None = None,
) -> tuple[Protocol, ImportReport]:
    """Import a REDCap dictionary (registered as a protocol) and/or records, in one transaction.

    With a dictionary the protocol it describes is registered (``protocol_id`` names a
    dictionary not written by ductal); without one, records go into the registered
    ``protocol_id``.
    """
    report = ImportReport(source="REDCap")
    if dictionary is not None:
        result = redcap_dictionary.import_dictionary(
            dictionary, protocol_id=protocol_id, partial=partial, source="data dictionary"
        )
        report.issues.extend(result.report.issues)
        if result.protocol is None:
            report.raise_if_errors("the dictionary could not be mapped")
            raise ValidationError("the dictionary could not be mapped")
        protocol = result.protocol
        records.register_protocol(session, protocol=protocol, actor=actor)
        report.imported["forms_defined"] = len(protocol.forms)
    elif protocol_id is not None:
        protocol = registered_protocol(session, protocol_id)
    else:
        raise ValidationError("give a data dictionary or a protocol id")
    if records_csv is not None:
        result_records = redcap_records.import_records(
            session,
            protocol=protocol,
            text=records_csv,
            actor=actor,
            partial=partial,
            source="records CSV",
            progress=progress,
            default_site=default_site,
        )
        report.issues.extend(result_records.issues)
        report.imported.update(result_records.imported)
        report.skipped.extend(result_records.skipped)
    return protocol, report


def import_odm_file(
    session: Session,
    *,
    path: str | Path,
    actor: str,
    protocol_id: str | None = None,
    partial: bool = False,
    progress: Progress = None,
    default_site: str | None = None,
) -> tuple[Protocol, ImportReport]:
    """Import an ODM file: its metadata as a protocol when not registered, then its data."""
    protocol: Protocol | None = None
    if protocol_id is not None:
        try:
            protocol = registered_protocol(session, protocol_id)
        except NotFound:
            protocol = None
    if protocol is None:
        mapped, report = odm.odm_to_protocol(path, protocol_id=protocol_id, partial=partial)
        if mapped is None:
            report.raise_if_errors("the metadata could not be mapped")
            raise ValidationError("the ODM metadata could not be mapped")
        protocol = mapped
        records.register_protocol(session, protocol=protocol, actor=actor)
    report = odm.import_odm(
        session,
        protocol=protocol,
        source=path,
        actor=actor,
        partial=partial,
        progress=progress,
        default_site=default_site,
    )
    return protocol, report


def zip_folder(folder: str | Path) -> bytes:
    """Return the files under ``folder`` as a zip archive (for a web download)."""
    root = Path(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()
