"""The ``ductal`` command line: a thin adapter over the library.

Each command group lives in its own module; this one assembles them and turns domain errors
into one clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys

import typer

from ductal import __version__
from ductal.cli import (
    admin,
    audit,
    design,
    exchange,
    procedure,
    protocols,
    randomise,
    report,
    serve,
    stats,
    study,
    subjects,
)
from ductal.errors import DuctalError

app = typer.Typer(
    name="ductal",
    help="Run clinical studies of granulomatous and periductal mastitis and ductal lavage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("init")(study.init)
app.command("demo")(study.demo)
app.add_typer(subjects.app, name="subjects")
app.add_typer(protocols.app, name="protocols")
app.add_typer(audit.app, name="audit")
app.add_typer(stats.app, name="stats")
app.add_typer(design.app, name="design")
app.command("report")(report.report)
app.add_typer(report.dataset_app, name="dataset")
app.add_typer(report.outcomes_app, name="outcomes")
app.command("randomise")(randomise.randomise)
app.add_typer(randomise.app, name="allocation")
app.command("backup")(admin.backup)
app.command("restore")(admin.restore)
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.evidence_app, name="evidence")
app.command("serve")(serve.serve)
app.add_typer(serve.users, name="users")
app.add_typer(procedure.app, name="procedure")
app.add_typer(exchange.export_app, name="export")
app.add_typer(exchange.import_app, name="import")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ductal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run clinical studies of granulomatous and periductal mastitis and ductal lavage."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ductal`` script: run ``app`` and report domain errors plainly."""
    try:
        app(args=argv, prog_name="ductal")
    except DuctalError as exc:
        lines = exc.lines()
        typer.echo(f"error: {lines[0]}", err=True)
        for line in lines[1:]:
            typer.echo(line, err=True)
        sys.exit(1)
