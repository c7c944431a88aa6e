"""Operations: ``ductal backup``, ``restore``, ``keys rotate`` and ``evidence stamp|check``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from ductal import backup as backups
from ductal import keys as vault_keys
from ductal.cli import _context
from ductal.db import session_scope
from ductal.errors import AuditError, ConfigError

keys_app = typer.Typer(help="Manage the vault key that encrypts direct identifiers.")
evidence_app = typer.Typer(help="Stamp the audit chain head and check a stamp later.")


def backup(
    out: Path = typer.Option(..., "--out", help="File to write the backup to (must be new)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Back up the configured database online, with a checksummed manifest beside it."""
    cfg = _context.settings()
    _context.engine(cfg).dispose()  # refuse a database without the current schema
    manifest = backups.backup(cfg.database_url, out)
    if json_out:
        typer.echo(manifest.to_json().rstrip())
        return
    rows = sum(manifest.row_counts.values())
    typer.echo(f"backup: {out} ({manifest.kind}, {manifest.size_bytes} bytes, {rows} rows)")
    typer.echo(f"manifest: {backups.manifest_path(out.expanduser().resolve())}")
    typer.echo(f"sha256: {manifest.sha256}")
    typer.echo(f"audit: {manifest.audit_entries} entries, chain head {manifest.audit_chain_head}")
    for note in manifest.notes:
        typer.echo(f"warning: {note}", err=True)


def restore(
    path: Path = typer.Argument(..., help="The backup file (its manifest must be beside it)."),
    to: str = typer.Option(
        "", "--to", help="Database URL to restore into (required unless --check-only)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the contents of a target that already holds data."
    ),
    check_only: bool = typer.Option(
        False, "--check-only", help="Only verify the backup's checksum and integrity."
    ),
) -> None:
    """Verify a backup, restore it into an empty database, then compare rows and the audit chain."""
    if check_only:
        manifest = backups.verify_backup(path)
        typer.echo(f"ok: {path} matches its manifest (sha256 {manifest.sha256})")
        return
    if not to:
        raise ConfigError("say where to restore: --to DATABASE_URL")
    report = backups.restore(path, to, force=force)
    rows = sum(report.row_counts.values())
    typer.echo(f"restored {path} into {report.target}: {rows} rows, counts match the manifest")
    typer.echo(f"audit: {report.chain.entries} entries, chain intact, head {report.chain.head}")
    if report.manifest.schema_revision is not None:
        typer.echo(
            f"schema revision {report.manifest.schema_revision}: run `ductal init` against the "
            "target if this ductal is newer"
        )


@keys_app.command("rotate")
def rotate(
    new_key: str = typer.Option(
        "",
        "--new-key",
        envvar="DUCTAL_NEW_VAULT_KEY",
        help="The new Fernet key (default: generate one). Also read from DUCTAL_NEW_VAULT_KEY.",
    ),
    key_file: Path | None = typer.Option(
        None, "--key-file", help="Write the new key to this file (mode 0600) instead of printing."
    ),
) -> None:
    """Re-encrypt every identity under a new vault key in one audited transaction."""
    cfg = _context.settings()
    generated = not new_key
    key = new_key or vault_keys.new_vault_key()
    if key_file is not None:
        _write_secret(key_file, key)
    engine = _context.engine(cfg)
    try:
        with session_scope(engine) as session:
            done = vault_keys.rotate_identities(
                session, current_key=cfg.vault_key, new_key=key, actor="ductal-keys"
            )
    finally:
        engine.dispose()
    typer.echo(
        f"re-encrypted {done.identities} identity records: key {done.old_fingerprint} -> "
        f"{done.new_fingerprint}"
    )
    dev_file = cfg.data_dir / "vault.key"
    if "DUCTAL_VAULT_KEY" not in os.environ and dev_file.exists():
        _write_secret(dev_file, key)
        typer.echo(f"the development key file {dev_file} now holds the new key")
    else:
        typer.echo("now set DUCTAL_VAULT_KEY to the new key everywhere ductal runs;")
        typer.echo("the old key no longer decrypts the identities (keep it with old backups only)")
    if generated and key_file is None:
        typer.echo(f"new key: {key}")
    elif key_file is not None:
        typer.echo(f"new key written to {key_file}")


def _write_secret(path: Path, value: str) -> None:
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    tmp.replace(path)


@evidence_app.command("stamp")
def stamp() -> None:
    """Print the audit chain head, entry count and time as JSON, to keep beside a copy."""
    cfg = _context.settings()
    _context.engine(cfg).dispose()
    _context.print_json(backups.stamp_database(cfg.database_url))


@evidence_app.command("check")
def check(
    stamp_file: Path = typer.Argument(
        ..., help="A JSON file holding a stamp (or a manifest with an audit_chain_head)."
    ),
) -> None:
    """Check the audit trail still verifies and still holds a stamped chain head."""
    cfg = _context.settings()
    raw = json.loads(stamp_file.read_text())
    if "audit_chain_head" not in raw and isinstance(raw.get("evidence"), dict):
        raw = raw["evidence"]
    engine = _context.engine(cfg)
    try:
        with session_scope(engine) as session:
            result = backups.check_stamp(session, raw)
    finally:
        engine.dispose()
    if not result.ok:
        raise AuditError(result.message)
    typer.echo(result.message)
