"""``ductal stats``: run the statistics engine on any CSV file."""

from __future__ import annotations

import typer

app = typer.Typer(help="Statistics that agree with R, on any CSV file.", no_args_is_help=True)
