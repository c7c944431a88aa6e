"""``ductal audit``: check the tamper-evident audit trail."""

from __future__ import annotations

import typer

from ductal import audit as audit_trail
from ductal.cli import _context
from ductal.db import session_scope
from ductal.errors import AuditError

app = typer.Typer(help="Check the audit trail.", no_args_is_help=True)


@app.command("verify")
def verify(
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Walk the whole audit chain and name the first broken entry, if any."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        report = audit_trail.verify_chain(session)
    if json_out:
        _context.print_json(
            {
                "ok": report.ok,
                "entries": report.entries,
                "head": report.head,
                "first_bad_id": report.first_bad_id,
                "problem": report.problem,
            }
        )
        if not report.ok:
            raise typer.Exit(1)
        return
    if not report.ok:
        raise AuditError(f"audit chain broken: {report.problem} ({report.entries} entries read)")
    typer.echo(f"ok: {report.entries} audit entries, chain intact")
    typer.echo(f"chain head: {report.head}")
