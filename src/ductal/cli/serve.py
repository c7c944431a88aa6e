"""``ductal serve`` and ``ductal users``: run the web application, manage sign-in credentials."""

from __future__ import annotations

import getpass

import typer

from ductal import accounts, signatures
from ductal.cli import _context
from ductal.db import session_scope
from ductal.errors import Problem, ValidationError

users = typer.Typer(help="Manage users' passwords and API tokens.", no_args_is_help=True)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="Worker processes (use several on PostgreSQL)."
    ),
) -> None:
    """Serve the web application and REST API (FastAPI under uvicorn).

    Each worker keeps DUCTAL_DB_POOL_SIZE database connections (default 10) and runs at most
    DUCTAL_DB_CONCURRENCY form saves at once (default 3); see docs/core.md.
    """
    import uvicorn

    cfg = _context.settings()
    engine = _context.engine(cfg)  # fail fast, in one clear line, before starting workers
    engine.dispose()
    if workers > 1 and cfg.is_sqlite:
        typer.echo("note: several workers share one SQLite file; writes are serialised", err=True)
    typer.echo(f"ductal: serving {cfg.describe_database()} on http://{host}:{port}/")
    uvicorn.run(
        "ductal.web.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level="info",
        # a worker imports the whole application before it answers; on a busy machine that can
        # take longer than uvicorn's default health-check wait, which would restart it in a loop
        timeout_worker_healthcheck=60,
    )


def _read_password(password: str | None) -> str:
    if password is not None:
        return password
    first = getpass.getpass("new password: ")
    if first != getpass.getpass("repeat it: "):
        raise ValidationError(
            "the passwords differ", problems=[Problem("password", "does not match")]
        )
    return first


@users.command("add")
def add(
    username: str = typer.Argument(..., help="Login name (letters, digits, '.' and '_')."),
    full_name: str = typer.Option(..., "--name", help="Full name shown in the audit trail."),
    site: list[str] = typer.Option([], "--site", help="Site code to grant the role at (repeat)."),
    role: str = typer.Option("read_only", "--role", help="Role at those sites."),
    language: str = typer.Option("en", "--language", help="Interface language: en or zh-Hans."),
    password: str | None = typer.Option(
        None, "--password", help="Password (asked for when omitted; avoid shell history)."
    ),
) -> None:
    """Create a user with a password and grant a role at sites."""
    cfg = _context.settings()
    hashed = signatures.hash_password(_read_password(password))
    with session_scope(_context.engine(cfg)) as session:
        user = accounts.create_user(
            session,
            username=username,
            full_name=full_name,
            language=language,
            password_hash=hashed,
            actor="cli",
        )
        for code in site:
            accounts.grant(
                session, user=user, site=accounts.get_site(session, code), role=role, actor="cli"
            )
    typer.echo(f"user {username} created" + (f" ({role} at {', '.join(site)})" if site else ""))


@users.command("passwd")
def passwd(
    username: str = typer.Argument(..., help="Whose password to set."),
    password: str | None = typer.Option(
        None, "--password", help="Password (asked for when omitted; avoid shell history)."
    ),
) -> None:
    """Set a user's password."""
    cfg = _context.settings()
    new = _read_password(password)
    with session_scope(_context.engine(cfg)) as session:
        user = accounts.get_user(session, username)
        signatures.set_password(session, user=user, new_password=new, actor="cli")
    typer.echo(f"password of {username} set")


@users.command("token")
def token(
    username: str = typer.Argument(..., help="Whose API token to create."),
    name: str = typer.Option("script", "--name", help="What the token is for."),
    days: int = typer.Option(365, "--days", min=1, max=3650, help="Days until it expires."),
) -> None:
    """Create an API token for scripts and print it once (only its hash is stored)."""
    from ductal.web.auth import create_token

    cfg = _context.settings()
    with session_scope(_context.engine(cfg)) as session:
        user = accounts.get_user(session, username)
        secret = create_token(session, user=user, name=name, actor="cli", days=days)
    typer.echo(secret)
