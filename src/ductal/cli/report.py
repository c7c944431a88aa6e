"""``ductal report``, ``ductal dataset export`` and ``ductal outcomes classify``."""

from __future__ import annotations

from pathlib import Path

import typer

from ductal.cli import _context
from ductal.db import session_scope
from ductal.outcomes.classify import classify_and_query
from ductal.outcomes.dataset import derive, export
from ductal.outcomes.extract import extract, registered_protocols
from ductal.reports.build import ReportOutput, build_report

dataset_app = typer.Typer(help="Analysis datasets derived from the database.", no_args_is_help=True)
outcomes_app = typer.Typer(
    help="Response classification and its data queries.", no_args_is_help=True
)

PROTOCOL_HELP = "Protocol id; repeat for several (default: every registered protocol)."


def report(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the report into."),
    protocol: list[str] = typer.Option([], "--protocol", "-p", help=PROTOCOL_HELP),
    lang: str = typer.Option("en", "--lang", help="Report language: en or zh."),
    pdf: bool = typer.Option(True, "--pdf/--no-pdf", help="Also write report.pdf."),
    json_output: bool = typer.Option(False, "--json", help="Print paths and timings as JSON."),
) -> None:
    """Write the efficacy report (HTML, PDF, figures, tables) of the configured database."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    try:
        result = build_report(
            engine,
            out,
            protocol_ids=protocol or None,
            lang=lang,
            pdf=pdf,
            database_label=cfg.describe_database(),
        )
    finally:
        engine.dispose()
    if json_output:
        _context.print_json(report_summary(result))
        return
    print_report(result)


def report_summary(result: ReportOutput) -> dict[str, object]:
    """Return what a report run wrote, as JSON-ready values."""
    return {
        "html": str(result.html),
        "pdf": str(result.pdf) if result.pdf else None,
        "figures": len(result.figures),
        "tables": len(result.tables),
        "protocols": [r.protocol_id for r in result.reports],
        "timings_seconds": {k: round(v, 3) for k, v in result.timings.items()},
        "not_computed": result.not_computed,
    }


def print_report(result: ReportOutput) -> None:
    """Print where the report is and what it could not compute."""
    typer.echo(f"report:   {result.html}")
    if result.pdf:
        typer.echo(f"pdf:      {result.pdf}")
    typer.echo(
        f"figures:  {len(result.figures)} in {result.directory / 'figures'}; "
        f"tables: {len(result.tables)} in {result.directory / 'tables'}"
    )
    total = sum(result.timings.values())
    split = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items() if v)
    typer.echo(f"time:     {total:.1f}s ({split})")
    if result.not_computed:
        typer.echo(f"not computed ({len(result.not_computed)}; the report says why):")
        for line in result.not_computed[:10]:
            typer.echo(f"  - {line}")
        if len(result.not_computed) > 10:
            typer.echo(f"  … and {len(result.not_computed) - 10} more")


@dataset_app.command("export")
def dataset_export(
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write the datasets into."),
    protocol: list[str] = typer.Option([], "--protocol", "-p", help=PROTOCOL_HELP),
    fmt: list[str] = typer.Option(
        ["csv", "parquet"], "--format", "-f", help="csv and/or parquet (repeat the option)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the written paths as JSON."),
) -> None:
    """Export the per-subject and per-assessment analysis datasets as CSV and Parquet."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    written: list[str] = []
    try:
        with session_scope(engine) as session:
            ids = protocol or registered_protocols(session)
        for pid in ids:
            data = derive(extract(engine, pid))
            written += [str(p) for p in export(data, out, formats=fmt)]
    finally:
        engine.dispose()
    if json_output:
        _context.print_json({"written": written})
        return
    for path in written:
        typer.echo(path)


@outcomes_app.command("classify")
def outcomes_classify(
    protocol: list[str] = typer.Option([], "--protocol", "-p", help=PROTOCOL_HELP),
    actor: str = typer.Option("outcomes", "--actor", help="Who raises the data queries."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Derive CR/PR/SD/PD for every assessment and query disagreements with the investigator."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    summaries = []
    try:
        with session_scope(engine) as session:
            ids = protocol or registered_protocols(session)
        for pid in ids:
            with session_scope(engine) as session:
                summaries.append(classify_and_query(session, protocol_id=pid, actor=actor))
    finally:
        engine.dispose()
    if json_output:
        _context.print_json(
            [
                {
                    "protocol": s.protocol_id,
                    "assessments": s.assessments,
                    "by_response": s.by_response,
                    "disagreements": s.disagreements,
                    "queries_opened": s.queries_opened,
                    "queries_already_open": s.queries_already_open,
                }
                for s in summaries
            ]
        )
        return
    for s in summaries:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.by_response.items()))
        typer.echo(
            f"{s.protocol_id}: {s.assessments} assessments ({counts or 'none'}); "
            f"{s.disagreements} disagree with the investigator: {s.queries_opened} queries "
            f"opened, {s.queries_already_open} already open"
        )
