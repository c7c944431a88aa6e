"""Settings: defaults for a laptop, refusal of insecure production settings."""

from __future__ import annotations

import subprocess
import sys
import time
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


def test_pool_size_and_concurrency_default_and_are_read(tmp_path: Path) -> None:
    defaults = load_settings({"DUCTAL_DATA_DIR": str(tmp_path)})
    assert (defaults.db_pool_size, defaults.db_concurrency) == (10, 3)
    env = {"DUCTAL_DATA_DIR": str(tmp_path), "DUCTAL_DB_POOL_SIZE": " 24 "}
    assert load_settings(env).db_pool_size == 24
    env = {"DUCTAL_DATA_DIR": str(tmp_path), "DUCTAL_DB_POOL_SIZE": "2"}
    assert load_settings(env).db_concurrency == 2  # never more than there are connections
    env = {"DUCTAL_DATA_DIR": str(tmp_path), "DUCTAL_DB_CONCURRENCY": "8"}
    assert load_settings(env).db_concurrency == 8


@pytest.mark.parametrize("raw", ["0", "-3", "many", "2.5", "201"])
def test_bad_pool_size_is_refused(tmp_path: Path, raw: str) -> None:
    env = {"DUCTAL_DATA_DIR": str(tmp_path), "DUCTAL_DB_POOL_SIZE": raw}
    with pytest.raises(ConfigError, match=r"DUCTAL_DB_POOL_SIZE: must be a whole number from 1"):
        load_settings(env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DUCTAL_DB_CONCURRENCY": "0"}, "from 1 to 10 .at most DUCTAL_DB_POOL_SIZE., not '0'"),
        ({"DUCTAL_DB_CONCURRENCY": "11"}, "from 1 to 10 .at most DUCTAL_DB_POOL_SIZE."),
        ({"DUCTAL_DB_POOL_SIZE": "4", "DUCTAL_DB_CONCURRENCY": "5"}, "from 1 to 4 "),
        ({"DUCTAL_DB_CONCURRENCY": "three"}, ".*, not 'three'"),
    ],
)
def test_bad_concurrency_is_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(
        ConfigError, match=f"DUCTAL_DB_CONCURRENCY: must be a whole number {message}"
    ):
        load_settings({"DUCTAL_DATA_DIR": str(tmp_path), **env})


def test_workers_starting_together_share_one_whole_key(tmp_path: Path) -> None:
    """Several server processes generating the development keys at once all read one key."""
    data = tmp_path / "data"
    go = tmp_path / "go"
    # each process imports everything first, then waits for the others: all start at once
    script = (
        "import os, sys, time; from ductal.config import load_settings\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.0005)\n"
        "s = load_settings({'DUCTAL_DATA_DIR': sys.argv[1]}); print(s.vault_key, s.secret_key)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(data), str(go)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(12)
    ]
    time.sleep(2)  # long enough for every process to be waiting
    go.touch()
    outputs = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    vault_key = outputs.pop().split()[0]
    assert (data / "vault.key").read_text().strip() == vault_key
    assert sorted(p.name for p in data.iterdir()) == ["secret.key", "vault.key"]
