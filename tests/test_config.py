"""Settings: defaults for a laptop, refusal of insecure production settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ductal.config import load_settings
from ductal.errors import ConfigError


def test_development_defaults_generate_keys_once(tmp_path: Path) -> None:
    env = {"DUCTAL_DATA_DIR": str(tmp_path)}
    first = load_settings(env)
    second = load_settings(env)
    assert first.env == "development"
    assert first.database_url == f"sqlite:///{tmp_path / 'ductal.sqlite'}"
    assert first.secret_key == second.secret_key and len(first.secret_key) >= 32
    assert first.vault_key == second.vault_key
    assert (tmp_path / "vault.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({"DUCTAL_ENV": "staging"}, "DUCTAL_ENV", id="unknown-env"),
        pytest.param({"DUCTAL_ENV": "production"}, "DUCTAL_SECRET_KEY: required", id="no-secret"),
        pytest.param(
            {"DUCTAL_ENV": "production", "DUCTAL_SECRET_KEY": "changeme"},
            "too weak",
            id="weak-secret",
        ),
        pytest.param(
            {"DUCTAL_ENV": "production", "DUCTAL_SECRET_KEY": "x" * 40},
            "DUCTAL_VAULT_KEY: required",
            id="no-vault",
        ),
        pytest.param({"DUCTAL_VAULT_KEY": "not-a-key"}, "Fernet", id="bad-vault"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"DUCTAL_DATA_DIR": str(tmp_path), **env})


def test_production_with_strong_keys_generates_nothing(tmp_path: Path) -> None:
    cfg = load_settings(
        {
            "DUCTAL_ENV": "production",
            "DUCTAL_DATA_DIR": str(tmp_path / "data"),
            "DUCTAL_SECRET_KEY": "k" * 48,
            "DUCTAL_VAULT_KEY": Fernet.generate_key().decode(),
            "DUCTAL_DATABASE_URL": "postgresql+psycopg://u:secret@db/ductal",
        }
    )
    assert cfg.env == "production" and not (tmp_path / "data").exists()
    assert "secret" not in cfg.describe_database()
