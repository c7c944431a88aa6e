"""``ductal randomise`` and ``ductal allocation``: live randomisation and the concealed lists."""

from __future__ import annotations

import csv
import getpass
import io
import json
from pathlib import Path

import typer

from ductal import records
from ductal.cli import _context
from ductal.db import session_scope
from ductal.errors import Problem, ValidationError
from ductal.interim import interim as run_interim
from ductal.randomisation import service

app = typer.Typer(
    help="Concealed allocation lists: generate, status, export, close arms, emergency unblinding.",
    no_args_is_help=True,
)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")
PROTOCOL_OPT = typer.Option(..., "--protocol", "-p", help="Protocol id.")


def _actor(value: str | None) -> str:
    return value or getpass.getuser()


ACTOR_OPT = typer.Option(
    None, "--actor", help="Who is acting, for the audit trail (default: the login name)."
)


def _arms(value: str | None) -> list[str] | None:
    if value is None:
        return None
    arms = [a.strip() for a in value.split(",") if a.strip()]
    if not arms:
        raise ValidationError("no arms", problems=[Problem("--arms", "name at least one arm")])
    return arms


def randomise(
    subject: str = typer.Argument(..., help="Study id of an enrolled subject, e.g. NIL-0007."),
    arms: str | None = typer.Option(
        None,
        "--arms",
        help="Adaptive trials: comma-separated arms still open (default: all arms not closed "
        "with `ductal allocation close-arm`).",
    ),
    actor: str | None = ACTOR_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Randomise an enrolled subject and print the arm (the only moment it is revealed)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        done = service.randomise(
            session, subject=found, actor=_actor(actor), active_arms=_arms(arms)
        )
    engine.dispose()
    if as_json:
        _context.print_json(done.to_dict())
        return
    typer.echo(f"{done.study_id} randomised to {done.arm}")
    typer.echo(
        f"  stratum {done.stratum}; {done.method.replace('_', ' ')} list {done.list_id}, "
        f"position {done.position}; by {done.assigned_by} at {done.assigned_at:%Y-%m-%d %H:%M} UTC"
    )


@app.command("generate")
def generate(
    protocol: str = PROTOCOL_OPT,
    role: str = typer.Option(..., "--role", help="Your role; must be statistician."),
    seed: int | None = typer.Option(
        None, "--seed", min=0, help="Master seed (default: 128 bits from the operating system)."
    ),
    actor: str | None = ACTOR_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Generate the allocation list of every stratum now (otherwise made at first use)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        made = service.generate_lists(
            session, protocol_id=protocol, actor=_actor(actor), role=role, seed=seed
        )
    engine.dispose()
    _print_summaries(made, as_json)


@app.command("status")
def status(protocol: str = PROTOCOL_OPT, as_json: bool = JSON_OPT) -> None:
    """Show each allocation list's size and how many slots are used (never the arms)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        summaries = service.list_summaries(session, protocol_id=protocol)
        closed = sorted(service.closed_arms(session, protocol))
    engine.dispose()
    if as_json:
        _context.print_json({"lists": [s.to_dict() for s in summaries], "closed_arms": closed})
        return
    _print_summaries(summaries, False)
    if closed:
        typer.echo(f"closed arms: {', '.join(closed)}")


def _print_summaries(summaries: list[service.ListSummary], as_json: bool) -> None:
    if as_json:
        _context.print_json([s.to_dict() for s in summaries])
        return
    if not summaries:
        typer.echo("no allocation lists yet (they are generated at the first randomisation)")
        return
    typer.echo(f"{'list':>4}  {'stratum':<44} {'method':<16} {'used':>5} {'slots':>6}")
    for s in summaries:
        slots = "-" if s.method == "minimisation" else str(s.slots)
        typer.echo(f"{s.list_id:>4}  {s.stratum:<44} {s.method:<16} {s.used:>5} {slots:>6}")


@app.command("export")
def export(
    protocol: str = PROTOCOL_OPT,
    role: str = typer.Option(..., "--role", help="Your role; must be statistician."),
    unblinded: bool = typer.Option(
        False, "--unblinded", help="Declare that you are the unblinded statistician."
    ),
    stratum: str | None = typer.Option(None, "--stratum", help="Only this list (stratum key)."),
    fmt: str = typer.Option("csv", "--format", help="csv or json."),
    out: Path | None = typer.Option(None, "--out", help="Write to this file (default: stdout)."),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the audit trail."),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Export the concealed allocation list with its arms (unblinded statistician only; audited)."""
    if fmt not in ("csv", "json"):
        raise ValidationError("bad format", problems=[Problem("--format", "must be csv or json")])
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        rows = service.export_list(
            session,
            protocol_id=protocol,
            actor=_actor(actor),
            role=role,
            unblinded=unblinded,
            stratum=stratum,
            reason=reason,
        )
    engine.dispose()
    dicts = [r.to_dict() for r in rows]
    if fmt == "json":
        text = json.dumps(dicts, indent=2, ensure_ascii=False) + "\n"
    else:
        buffer = io.StringIO()
        fields = list(service.SlotRow.__dataclass_fields__)
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dicts)
        text = buffer.getvalue()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {len(rows)} slot(s) to {out}")


@app.command("close-arm")
def close_arm(
    arm: str = typer.Argument(..., help="Arm key to close to new subjects."),
    protocol: str = PROTOCOL_OPT,
    reason: str = typer.Option(..., "--reason", help="The decision and its grounds (audited)."),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Close an arm of an adaptive trial to new subjects (after an interim decision)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        still = service.close_arm(
            session, protocol_id=protocol, arm=arm, actor=_actor(actor), reason=reason
        )
    engine.dispose()
    typer.echo(f"closed {arm}; arms still open: {', '.join(still)}")


@app.command("unblind")
def unblind(
    subject: str = typer.Argument(..., help="Study id of the subject."),
    reason: str = typer.Option(..., "--reason", help="The emergency that needs the arm."),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Emergency unblinding of one subject: print the arm; who and why are audited."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        arm = service.unblind(session, subject=found, actor=_actor(actor), reason=reason)
    engine.dispose()
    typer.echo(f"{subject}: {arm}  (unblinding recorded in the audit trail)")


def interim(
    protocol: str = typer.Option(..., "--protocol", "-p", help="Adaptive protocol id."),
    assessment: str | None = typer.Option(
        None,
        "--assessment",
        help="Event whose response counts, or 'latest' for each subject's last follow-up "
        "(default: the protocol's interim_assessment).",
    ),
    responders: str | None = typer.Option(
        None,
        "--responders",
        help="Comma-separated response codes counted as response, e.g. cr or cr,pr "
        "(default: the protocol's interim_responders).",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Interim look of an adaptive trial: each arm's posterior and whether to keep or drop it."""
    codes = None if responders is None else [c.strip() for c in responders.split(",") if c.strip()]
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        report = run_interim(session, protocol_id=protocol, assessment=assessment, responders=codes)
    engine.dispose()
    if as_json:
        _context.print_json(_finite(report.to_dict()))
        return
    r = report.rules
    typer.echo(
        f"Interim look, {report.protocol_id} {report.protocol_version}: responders = "
        f"{'/'.join(r.responders)} at {r.assessment}; prior Beta({r.prior_a:g}, {r.prior_b:g}); "
        f"drop an arm when P(rate > {r.threshold:g}) < {r.drop_bound:g}"
    )
    typer.echo(
        f"{'arm':<16} {'open':<5} {'rand':>5} {'eval':>5} {'resp':>5} {'mean':>6} "
        f"{'P(>thr)':>8} {'P(best)':>8}  recommendation"
    )
    for a in report.arms:
        typer.echo(
            f"{a.arm:<16} {'yes' if a.open else 'no':<5} {a.randomised:>5} {a.evaluated:>5} "
            f"{a.responders:>5} {a.posterior_mean:>6.3f} {a.p_above_threshold:>8.4f} "
            f"{a.p_best:>8.4f}  {a.recommendation}: {a.reason}"
        )
    typer.echo(f"method: {report.method}")


def _finite(value: object) -> object:
    """Return ``value`` with NaN floats replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
