"""``ductal init`` and ``ductal demo``: create the schema, build the demo study."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text

from ductal.cli import _context
from ductal.db import current_revision, make_engine, migrate
from ductal.demo import DEMO_PASSWORD, DEMO_USERS, build_demo
from ductal.errors import ConfigError
from ductal.reports.build import build_report
from ductal.synthetic import ACTOR


def init() -> None:
    """Create or upgrade the database schema (runs the migrations)."""
    cfg = _context.settings()
    engine = make_engine(cfg.database_url, pooled=False)
    before = current_revision(engine)
    migrate(engine)
    after = current_revision(engine)
    engine.dispose()
    state = "created" if before is None else ("upgraded" if before != after else "up to date")
    typer.echo(f"database {cfg.describe_database()}: schema {state} (revision {after})")


def _reset_sqlite(path: Path) -> None:
    """Delete a SQLite demo database — refused when anyone but the generator ever wrote to it."""
    if path.exists():
        engine = make_engine(f"sqlite:///{path}", pooled=False)
        try:
            if current_revision(engine) is not None:
                with engine.connect() as conn:
                    others = conn.execute(
                        text("SELECT COUNT(*) FROM audit_entries WHERE actor <> :a"), {"a": ACTOR}
                    ).scalar_one()
                if others:
                    raise ConfigError(
                        f"--reset refused: {path} holds data entered by people, not only demo data"
                    )
        finally:
            engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            candidate.unlink()


def demo(
    patients: int = typer.Option(
        60, "--patients", "-n", min=1, max=5000, help="Patients screened per built-in protocol."
    ),
    seed: int = typer.Option(20161101, "--seed", help="Seed of the synthetic cohort."),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the demo's outputs (default: DATA_DIR/demo)."
    ),
    reset: bool = typer.Option(
        False, "--reset", help="Delete the SQLite demo database first (refused on PostgreSQL)."
    ),
) -> None:
    """Build a demo study from nothing: sites, users and a synthetic cohort on every protocol."""
    cfg = _context.settings()
    if cfg.env == "production":
        raise ConfigError(
            "ductal demo is refused with DUCTAL_ENV=production: it creates users with a "
            "published password and synthetic patients"
        )
    if reset:
        if not cfg.is_sqlite:
            raise ConfigError(
                "--reset only deletes SQLite files; empty a PostgreSQL database yourself"
            )
        _reset_sqlite(Path(cfg.database_url.removeprefix("sqlite:///")))
    engine = make_engine(cfg.database_url, pooled=False)
    migrate(engine)
    out_dir = out or cfg.data_dir / "demo"
    with Progress(
        TextColumn("{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:

        def tracker(label: str, total: int) -> Callable[[int], None]:
            task = bar.add_task(label, total=total)
            return lambda n: bar.advance(task, n)

        summary = build_demo(
            engine,
            vault=_context.vault(cfg),
            patients_per_protocol=patients,
            seed=seed,
            progress=tracker,
        )
    engine.dispose()
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "database": cfg.describe_database(),
        "seed": seed,
        "audit_entries": summary.audit_entries,
        "audit_chain_head": summary.chain_head,
        "cohorts": [
            {
                "protocol": c.protocol_id,
                "screened": c.screened,
                "ineligible": c.ineligible,
                "enrolled": c.enrolled,
                "forms_saved": c.forms_saved,
                "invalid_entries_refused": c.rejected_entries,
                "lost_to_follow_up": c.lost_to_follow_up,
                "withdrawn": c.withdrawn,
            }
            for c in summary.cohorts
        ],
    }
    (out_dir / "demo-summary.json").write_text(json.dumps(payload, indent=2) + "\n")

    typer.echo("")
    typer.echo(f"{'protocol':<26}{'screened':>9}{'enrolled':>9}{'forms':>7}{'refused':>9}")
    for c in summary.cohorts:
        typer.echo(
            f"{c.protocol_id:<26}{c.screened:>9}{c.enrolled:>9}{c.forms_saved:>7}"
            f"{c.rejected_entries:>9}"
        )
    typer.echo("")
    typer.echo(f"database:     {cfg.describe_database()}")
    typer.echo(
        f"audit trail:  {summary.audit_entries} entries, chain head {summary.chain_head[:16]}…"
    )
    typer.echo(f"summary:      {out_dir / 'demo-summary.json'}")
    report_engine = make_engine(cfg.database_url, pooled=False)
    try:
        result = build_report(
            report_engine, out_dir / "report", database_label=cfg.describe_database()
        )
    finally:
        report_engine.dispose()
    typer.echo(f"report:       {result.html}  (and {result.pdf}, figures/, tables/)")
    typer.echo("")
    users = ", ".join(u[0] for u in DEMO_USERS)
    typer.echo(f"web sign-in:  users {users}; password {DEMO_PASSWORD}")
    typer.echo("next:")
    typer.echo("  ductal subjects list --protocol lavage-observational")
    typer.echo("  ductal audit verify")
    typer.echo("  ductal protocols show lavage-vs-steroid-ni")
    typer.echo(f"  ductal report --lang zh --out {out_dir / 'report-zh'}")
