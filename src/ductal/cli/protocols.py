"""``ductal protocols``: list, show and check study protocol definitions."""

from __future__ import annotations

import typer

app = typer.Typer(help="List, show and check study protocols.", no_args_is_help=True)
