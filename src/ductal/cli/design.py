"""``ductal design``: sample sizes, two-stage designs, boundaries and adaptive simulation."""

from __future__ import annotations

import typer

app = typer.Typer(help="Design and simulate trials.", no_args_is_help=True)
