"""Every command and every option explains itself, and docs/cli.md matches the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main

from ductal.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _commands(command: Any, path: str) -> list[tuple[str, Any]]:
    found = [(path, command)]
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        found.extend(_commands(sub, f"{path} {name}"))
    return found


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in _commands(typer.main.get_command(app), "ductal"):
        if not (command.help or command.short_help):
            missing.append(path)
        for param in command.params:
            if param.param_type_name == "option" and not getattr(param, "help", None):
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []


def test_cli_reference_is_current() -> None:
    env = {**os.environ, "TYPER_USE_RICH": "0"}
    rendered = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_docs.py")],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert (ROOT / "docs" / "cli.md").read_text() == rendered, "run `make docs`"
