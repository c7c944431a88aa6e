"""Settings: one typed object read from ``DUCTAL_*`` environment variables.

| variable | meaning | default |
|---|---|---|
| ``DUCTAL_ENV`` | ``development`` or ``production`` | ``development`` |
| ``DUCTAL_DATA_DIR`` | SQLite file, keys, uploads and reports | ``./ductal-data`` |
| ``DUCTAL_DATABASE_URL`` | SQLAlchemy URL: SQLite or ``postgresql+psycopg`` | SQLite file |
| ``DUCTAL_SECRET_KEY`` | signs sessions and CSRF tokens (32+ characters) | generated (dev) |
| ``DUCTAL_VAULT_KEY`` | Fernet key that encrypts direct identifiers | generated (dev) |
| ``DUCTAL_DB_POOL_SIZE`` | database connections each web worker keeps open | ``10`` |
| ``DUCTAL_DB_CONCURRENCY`` | short transactions (form saves) a web worker runs at once | ``3`` |

In development a missing key is generated once and kept in the data directory (mode 0600), so a
laptop install just works. In production a missing, short or well-known key is refused at start.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet

from ductal.errors import ConfigError

Environment = Literal["development", "production"]
_MIN_SECRET_LENGTH = 32
_WEAK_SECRETS = {"changeme", "secret", "development", "password", "ductal"}
DEFAULT_POOL_SIZE = 10
DEFAULT_DB_CONCURRENCY = 3
_MAX_POOL_SIZE = 200


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with :func:`load_settings`."""

    env: Environment
    data_dir: Path
    database_url: str
    secret_key: str
    vault_key: str
    db_pool_size: int = DEFAULT_POOL_SIZE
    db_concurrency: int = DEFAULT_DB_CONCURRENCY

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    def describe_database(self) -> str:
        """Return the database URL with any password masked, for printing."""
        from sqlalchemy.engine import make_url

        return make_url(self.database_url).render_as_string(hide_password=True)


def _key_file(data_dir: Path, name: str, make: str) -> str:
    """Return the key kept in ``data_dir/name``, writing ``make`` there first if there is none.

    Several processes may start at once (``ductal serve --workers 4``): the key is written to a
    private file and linked into place, which fails if another process got there first, so every
    process reads one whole key and never a half-written file.
    """
    path = data_dir / name
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(make + "\n")
            with contextlib.suppress(FileExistsError):  # another process was first: use its key
                os.link(draft, path)
        finally:
            draft.unlink()
    return path.read_text().strip()


def _count(name: str, raw: str, most: int, why: str = "") -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= most:
        raise ConfigError(f"{name}: must be a whole number from 1 to {most}{why}, not {raw!r}")
    return value


def _check_vault_key(key: str) -> None:
    try:
        Fernet(key.encode())
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            "DUCTAL_VAULT_KEY: not a valid Fernet key (32 url-safe base64-encoded bytes)"
        ) from exc


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Return settings from ``environ`` (default ``os.environ``), failing fast on bad values."""
    env_vars = os.environ if environ is None else environ
    env = env_vars.get("DUCTAL_ENV", "development").strip().lower()
    if env not in ("development", "production"):
        raise ConfigError(f"DUCTAL_ENV: must be 'development' or 'production', not {env!r}")
    data_dir = Path(env_vars.get("DUCTAL_DATA_DIR", "ductal-data")).expanduser().resolve()
    database_url = env_vars.get("DUCTAL_DATABASE_URL", "").strip()
    if not database_url:
        database_url = f"sqlite:///{data_dir / 'ductal.sqlite'}"
    secret = env_vars.get("DUCTAL_SECRET_KEY", "").strip()
    vault = env_vars.get("DUCTAL_VAULT_KEY", "").strip()
    pool_size = _count(
        "DUCTAL_DB_POOL_SIZE",
        env_vars.get("DUCTAL_DB_POOL_SIZE", str(DEFAULT_POOL_SIZE)).strip(),
        _MAX_POOL_SIZE,
    )
    # more transactions at once than connections would only wait for one
    concurrency = _count(
        "DUCTAL_DB_CONCURRENCY",
        env_vars.get("DUCTAL_DB_CONCURRENCY", str(min(DEFAULT_DB_CONCURRENCY, pool_size))).strip(),
        pool_size,
        " (at most DUCTAL_DB_POOL_SIZE)",
    )

    if env == "production":
        if not secret:
            raise ConfigError("DUCTAL_SECRET_KEY: required in production")
        if len(secret) < _MIN_SECRET_LENGTH or secret.lower() in _WEAK_SECRETS:
            raise ConfigError(
                f"DUCTAL_SECRET_KEY: too weak; use at least {_MIN_SECRET_LENGTH} random characters"
            )
        if not vault:
            raise ConfigError("DUCTAL_VAULT_KEY: required in production")
    else:
        if not secret:
            secret = _key_file(data_dir, "secret.key", secrets.token_urlsafe(48))
        if not vault:
            vault = _key_file(data_dir, "vault.key", Fernet.generate_key().decode())
    _check_vault_key(vault)
    return Settings(
        env=env,  # type: ignore[arg-type]
        data_dir=data_dir,
        database_url=database_url,
        secret_key=secret,
        vault_key=vault,
        db_pool_size=pool_size,
        db_concurrency=concurrency,
    )
