"""``ductal subjects``: look at the subjects in the configured database."""

from __future__ import annotations

import typer
from sqlalchemy import select

from ductal import records
from ductal.cli import _context
from ductal.db import session_scope
from ductal.models import Site

app = typer.Typer(help="List and inspect study subjects.", no_args_is_help=True)


@app.command("list")
def list_subjects(
    protocol: str | None = typer.Option(None, "--protocol", "-p", help="Only this protocol id."),
    status: str | None = typer.Option(None, "--status", help="Only subjects with this status."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """Print one line per subject: study id, protocol, site, arm, status, dates."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        sites = {s.id: s.code for s in session.scalars(select(Site))}
        rows = [
            {
                "study_id": s.study_id,
                "protocol": s.protocol_id,
                "site": sites.get(s.site_id, "?"),
                "arm": s.arm,
                "status": s.status,
                "screened_on": s.screened_on.isoformat() if s.screened_on else None,
                "enrolled_on": s.enrolled_on.isoformat() if s.enrolled_on else None,
                "reason": s.status_reason,
            }
            for s in records.list_subjects(session, protocol_id=protocol, status=status)
        ]
    if json_out:
        _context.print_json(rows)
        return
    if not rows:
        typer.echo("no subjects")
        return
    for r in rows:
        line = (
            f"{r['study_id']:<10} {r['protocol']:<24} {r['site']:<8} {r['arm'] or '-':<16} "
            f"{r['status']:<18} screened {r['screened_on'] or '-'}"
            f"  enrolled {r['enrolled_on'] or '-'}"
        )
        typer.echo(line.rstrip())
    typer.echo(f"{len(rows)} subject(s)")
