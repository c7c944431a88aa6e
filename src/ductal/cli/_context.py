"""What every database command needs: settings, an engine on a migrated schema, the vault."""

from __future__ import annotations

import json
from typing import Any

import typer
from sqlalchemy import Engine

from ductal.config import Settings, load_settings
from ductal.db import make_engine, require_schema
from ductal.vault import Vault


def settings() -> Settings:
    """Return the settings from the environment (errors surface as one line)."""
    return load_settings()


def engine(cfg: Settings, *, require: bool = True) -> Engine:
    """Return an engine on the configured database, checking the schema is current."""
    eng = make_engine(cfg.database_url, pooled=False)
    if require:
        require_schema(eng)
    return eng


def vault(cfg: Settings) -> Vault:
    return Vault(cfg.vault_key)


def print_json(payload: Any) -> None:
    """Print ``payload`` as JSON (NaN is never printed: callers pass None for missing values)."""
    typer.echo(json.dumps(payload, indent=2, ensure_ascii=False, default=str, allow_nan=False))
