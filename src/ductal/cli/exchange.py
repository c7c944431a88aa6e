"""``ductal export`` and ``ductal import``: move a study to and from REDCap, ODM, FHIR and stats.

Thin: each command parses options, calls one function of :mod:`ductal.exchange.api` inside one
transaction, shows a progress bar and prints where the files went (or the import report).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from ductal.cli import _context
from ductal.db import session_scope
from ductal.exchange import api
from ductal.exchange.deidentify import DeidOptions
from ductal.exchange.report import ImportReport
from ductal.models import Subject

export_app = typer.Typer(
    help="Export a study (pseudonymous by default) for REDCap, CDISC ODM, FHIR or statistics.",
    no_args_is_help=True,
)
import_app = typer.Typer(
    help="Import REDCap or CDISC ODM files into a study.", no_args_is_help=True
)

_PROTOCOL = typer.Option(..., "--protocol", "-p", help="Protocol id (registered in the database).")
_OUT = typer.Option(..., "--out", "-o", help="Where to write (a folder; a file for odm).")
_HASH = typer.Option(
    False, "--hash-ids", help="Replace study ids by a salted hash (salt not kept)."
)
_SHIFT = typer.Option(
    False, "--shift-dates", help="Move all dates of a subject by one random offset."
)
_MAX_SHIFT = typer.Option(180, "--max-shift-days", help="Largest date offset in days.", min=1)
_FREE_TEXT = typer.Option(False, "--drop-free-text", help="Leave out free-text answers.")
_ACTOR = typer.Option("cli", "--actor", help="Name recorded in the manifest and audit trail.")
_JSON = typer.Option(False, "--json", help="Print JSON instead of lines.")
_SITE = typer.Option(
    None, "--site", help="Site code for subjects whose site is not in the database."
)


@contextmanager
def _bar(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _options(hash_ids: bool, shift: bool, max_shift: int, free_text: bool) -> DeidOptions:
    return DeidOptions(
        hash_ids=hash_ids, shift_dates=shift, max_shift_days=max_shift, drop_free_text=free_text
    )


def _count(session: Any, protocol: str) -> int:
    stmt = select(func.count()).select_from(Subject).where(Subject.protocol_id == protocol)
    return int(session.scalar(stmt) or 0)


def _done(result: api.ExportResult, json_out: bool) -> None:
    if json_out:
        _context.print_json(
            {
                "path": str(result.path),
                "subjects": result.subjects,
                "files": [str(p) for p in result.files],
                "manifest": result.manifest,
            }
        )
        return
    typer.echo(f"exported {result.subjects} subject(s) to {result.path}")
    for path in result.files:
        typer.echo(f"  {path}")


def _export(
    kind: str, protocol: str, json_out: bool, call: Callable[..., api.ExportResult]
) -> None:
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with (
        session_scope(engine) as session,
        _bar(f"export {kind}", _count(session, protocol)) as progress,
    ):
        result = call(session, progress)
    _done(result, json_out)


@export_app.command("redcap")
def export_redcap(
    protocol: str = _PROTOCOL,
    out: Path = _OUT,
    hash_ids: bool = _HASH,
    shift_dates: bool = _SHIFT,
    max_shift_days: int = _MAX_SHIFT,
    drop_free_text: bool = _FREE_TEXT,
    actor: str = _ACTOR,
    json_out: bool = _JSON,
) -> None:
    """Write a REDCap data dictionary and records CSV (and a manifest) into a folder."""
    options = _options(hash_ids, shift_dates, max_shift_days, drop_free_text)
    _export(
        "redcap",
        protocol,
        json_out,
        lambda s, p: api.export_redcap(
            s, protocol_id=protocol, out=out, options=options, actor=actor, progress=p
        ),
    )


@export_app.command("odm")
def export_odm(
    protocol: str = _PROTOCOL,
    out: Path = _OUT,
    audit_records: bool = typer.Option(
        False, "--audit", help="Add each form's latest audit record and live signature."
    ),
    hash_ids: bool = _HASH,
    shift_dates: bool = _SHIFT,
    max_shift_days: int = _MAX_SHIFT,
    drop_free_text: bool = _FREE_TEXT,
    actor: str = _ACTOR,
    json_out: bool = _JSON,
) -> None:
    """Write one CDISC ODM 1.3.2 XML file, validated against the schema."""
    options = _options(hash_ids, shift_dates, max_shift_days, drop_free_text)
    _export(
        "odm",
        protocol,
        json_out,
        lambda s, p: api.export_odm(
            s,
            protocol_id=protocol,
            out=out,
            options=options,
            include_audit=audit_records,
            actor=actor,
            progress=p,
        ),
    )


@export_app.command("fhir")
def export_fhir(
    protocol: str = _PROTOCOL,
    out: Path = _OUT,
    version: str = typer.Option("R4B", "--fhir-version", help="FHIR release: R4B or R5."),
    hash_ids: bool = _HASH,
    shift_dates: bool = _SHIFT,
    max_shift_days: int = _MAX_SHIFT,
    drop_free_text: bool = _FREE_TEXT,
    actor: str = _ACTOR,
    json_out: bool = _JSON,
) -> None:
    """Write one FHIR Bundle JSON per subject (pseudonymous Patient) into a folder."""
    if version not in ("R4B", "R5"):
        raise typer.BadParameter("R4B or R5", param_hint="--fhir-version")
    options = _options(hash_ids, shift_dates, max_shift_days, drop_free_text)
    _export(
        "fhir",
        protocol,
        json_out,
        lambda s, p: api.export_fhir(
            s,
            protocol_id=protocol,
            out=out,
            version=version,  # type: ignore[arg-type]
            options=options,
            actor=actor,
            progress=p,
        ),
    )


def _stat_command(fmt: str, doc: str) -> None:
    def command(
        protocol: str = _PROTOCOL,
        out: Path = _OUT,
        wide: bool = typer.Option(False, "--wide", help="One row per subject per form."),
        dataset: str = typer.Option(
            "forms", "--dataset", help="forms (raw forms) or analysis (ductal.outcomes)."
        ),
        hash_ids: bool = _HASH,
        shift_dates: bool = _SHIFT,
        max_shift_days: int = _MAX_SHIFT,
        drop_free_text: bool = _FREE_TEXT,
        actor: str = _ACTOR,
        json_out: bool = _JSON,
    ) -> None:
        if dataset not in ("forms", "analysis"):
            raise typer.BadParameter("forms or analysis", param_hint="--dataset")
        options = _options(hash_ids, shift_dates, max_shift_days, drop_free_text)
        _export(
            fmt,
            protocol,
            json_out,
            lambda s, p: api.export_stat(
                s,
                protocol_id=protocol,
                out=out,
                fmt=fmt,  # type: ignore[arg-type]
                options=options,
                wide=wide,
                dataset=dataset,
                actor=actor,
                progress=p,
            ),
        )

    command.__doc__ = doc
    export_app.command(fmt)(command)


_stat_command("sas", "Write SAS transport (XPORT v8) files with labels and a formats.sas program.")
_stat_command("spss", "Write SPSS .sav files with variable and value labels.")
_stat_command("stata", "Write Stata .dta files with variable and value labels.")
_stat_command("csv", "Write R-ready CSV files, each with a codebook CSV.")


def _report(protocol_id: str, report: ImportReport, json_out: bool) -> None:
    if json_out:
        _context.print_json({"protocol": protocol_id, **report.to_json()})
        return
    counts = ", ".join(f"{v} {k}" for k, v in report.imported.items()) or "nothing"
    typer.echo(f"imported into {protocol_id}: {counts}")
    for issue in report.errors:
        typer.echo(f"  not imported: {issue}")
    for issue in report.warnings:
        typer.echo(f"  note: {issue}")


@import_app.command("redcap")
def import_redcap(
    dictionary: Path | None = typer.Option(
        None, "--dictionary", "-d", help="REDCap data dictionary CSV (becomes a protocol)."
    ),
    records_csv: Path | None = typer.Option(None, "--records", "-r", help="REDCap records CSV."),
    folder: Path | None = typer.Option(
        None, "--from", help="A folder written by 'ductal export redcap' (both files)."
    ),
    protocol: str | None = typer.Option(
        None, "--protocol", "-p", help="Protocol id (to name a foreign dictionary, or for records)."
    ),
    partial: bool = typer.Option(False, "--partial", help="Import the valid part, list the rest."),
    site: str | None = _SITE,
    actor: str = _ACTOR,
    json_out: bool = _JSON,
) -> None:
    """Import a REDCap data dictionary and/or records: all or nothing unless --partial."""
    if folder is not None:
        dictionary = dictionary or folder / "data_dictionary.csv"
        records_csv = records_csv or folder / "records.csv"
    if dictionary is None and records_csv is None:
        raise typer.BadParameter("give --dictionary, --records or --from")
    dictionary_text = dictionary.read_text(encoding="utf-8-sig") if dictionary else None
    records_text = records_csv.read_text(encoding="utf-8-sig") if records_csv else None
    # one step per subject: the distinct record ids (first column) of the records file
    rows = (
        len({line.split(",", 1)[0] for line in records_text.splitlines()[1:]})
        if records_text
        else None
    )
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session, _bar("import redcap", rows) as progress:
        registered, report = api.import_redcap(
            session,
            actor=actor,
            dictionary=dictionary_text,
            records_csv=records_text,
            protocol_id=protocol,
            partial=partial,
            progress=progress,
            default_site=site,
        )
    _report(registered.id, report, json_out)


@import_app.command("odm")
def import_odm(
    path: Path = typer.Argument(..., help="CDISC ODM 1.3.2 XML file.", exists=True),
    protocol: str | None = typer.Option(
        None, "--protocol", "-p", help="Registered protocol id (else the file's metadata is used)."
    ),
    partial: bool = typer.Option(False, "--partial", help="Import the valid part, list the rest."),
    site: str | None = _SITE,
    actor: str = _ACTOR,
    json_out: bool = _JSON,
) -> None:
    """Import an ODM file (schema, OIDs and values checked): all or nothing unless --partial."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session, _bar("import odm", None) as progress:
        registered, report = api.import_odm_file(
            session,
            path=path,
            actor=actor,
            protocol_id=protocol,
            partial=partial,
            progress=progress,
            default_site=site,
        )
    _report(registered.id, report, json_out)
