"""``ductal procedure``: ductoscopy and lavage sessions — checks, records, reports, sheets."""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Any

import typer
from sqlalchemy import select

from ductal import records
from ductal.cli import _context
from ductal.db import session_scope
from ductal.errors import Problem, ValidationError
from ductal.models import Site
from ductal.procedure import checks, course, instructions, pathology, report
from ductal.procedure.record import IMAGE_FIELDS, save_procedure, store_image
from ductal.procedure.rules import procedure_settings
from ductal.protocols.loader import builtin_protocol

app = typer.Typer(
    help="Ductoscopy and ductal lavage: checks, procedure records, reports, patient sheets.",
    no_args_is_help=True,
)

JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON.")
LANG_OPT = typer.Option("en", "--lang", help="Language: en or zh.")
ACTOR_OPT = typer.Option(
    None, "--actor", help="Who is acting, for the audit trail (default: the login name)."
)
TODAY_OPT = typer.Option(None, "--today", help="Treat this date (YYYY-MM-DD) as today.")


def _actor(value: str | None) -> str:
    return value or getpass.getuser()


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            "bad date", problems=[Problem(option, "must be a date YYYY-MM-DD")]
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValidationError(
            "cannot read the file", problems=[Problem("--file", str(exc))]
        ) from None
    except json.JSONDecodeError as exc:
        raise ValidationError(
            "the file is not JSON", problems=[Problem("--file", f"line {exc.lineno}: {exc.msg}")]
        ) from None
    if not isinstance(data, dict):
        raise ValidationError(
            "the file is not a JSON object", problems=[Problem("--file", "expected {...}")]
        )
    return data


def _print_findings(findings: list[dict[str, Any]]) -> None:
    for f in findings:
        typer.echo(f"  [{f['level']}] {f['key']}: {f['message']}")


@app.command("checklist")
def checklist(
    subject: str | None = typer.Option(
        None, "--subject", "-s", help="Study id: record (--file) or show (--date) its checks."
    ),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="JSON answers of the pre_session_checks form to record."
    ),
    day: str | None = typer.Option(None, "--date", help="Show the checks of this day."),
    protocol: str = typer.Option(
        "lavage-observational", "--protocol", "-p", help="Protocol whose checklist to print."
    ),
    lang: str = LANG_OPT,
    actor: str | None = ACTOR_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Print the protocol's checklist, or record / show a subject's pre-session checks."""
    if subject is None:
        p = builtin_protocol(protocol)
        settings = procedure_settings(p)
        form = p.form(settings.record_form)
        payload: dict[str, Any] = {
            "protocol": p.id,
            "steps": [
                {
                    "field": s.field,
                    "label": form.field(s.field).label.get(lang),
                    "required": s.required,
                }
                for s in settings.steps
            ],
            "checks": [
                {"key": c.key, "level": c.level, "when": c.when, "message": c.message.get(lang)}
                for c in settings.checks
            ],
            "rules": [
                {"key": r.key, "level": r.level, "when": r.when, "message": r.message.get(lang)}
                for r in settings.rules
            ],
        }
        if json_out:
            _context.print_json(payload)
            return
        typer.echo(f"Procedure checklist of {p.id}")
        for number, step in enumerate(payload["steps"], start=1):
            typer.echo(
                f"  {number}. {step['label']}" + ("" if step["required"] else " (if needed)")
            )
        typer.echo("Pre-session checks:")
        for c in payload["checks"]:
            typer.echo(f"  [{c['level']}] {c['key']}: {c['message']}")
        return
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        if file is not None:
            _, result = checks.record_checks(
                session,
                subject=found,
                data=_read_json(file),
                actor=_actor(actor),
                vault=_context.vault(cfg),
                lang=lang,
            )
        else:
            when = _date(day, "--date") or dt.date.today()
            result = checks.checks_for_day(session, subject=found, day=when, lang=lang)
        payload = result.to_dict()
    if json_out:
        _context.print_json(payload)
        return
    verdict = "may start" if payload["may_start"] else "may NOT start"
    typer.echo(f"{subject} on {payload['day']}: session {verdict}")
    _print_findings(payload["findings"])
    for key, reason in payload["overridden"].items():
        typer.echo(f"  overridden {key}: {reason}")


@app.command("override")
def override(
    subject: str = typer.Argument(..., help="Study id, e.g. LAV-0003."),
    check: str = typer.Option(..., "--check", help="Key of the blocking check to override."),
    reason: str = typer.Option(..., "--reason", help="Why the session may go ahead."),
    day: str = typer.Option(..., "--date", help="Day of the checks (YYYY-MM-DD)."),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Override a blocking pre-session check (investigators only; audited with the reason)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    when = _date(day, "--date")
    assert when is not None
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        result = checks.override_check(
            session, subject=found, day=when, check=check, reason=reason, actor=_actor(actor)
        )
        may_start = result.may_start
    typer.echo(f"overridden {check}; session {'may' if may_start else 'still may NOT'} start")


@app.command("record")
def record(
    subject: str = typer.Argument(..., help="Study id, e.g. LAV-0003."),
    file: Path = typer.Option(..., "--file", "-f", help="JSON answers of the procedure form."),
    image: list[Path] = typer.Option(
        [], "--image", help="A still image to attach (up to three; stored by SHA-256)."
    ),
    record_id: int | None = typer.Option(None, "--record-id", help="Edit this saved record."),
    version: int | None = typer.Option(None, "--version", help="Version of the record you edited."),
    reason: str | None = typer.Option(None, "--reason", help="Why saved data is changed."),
    lang: str = LANG_OPT,
    actor: str | None = ACTOR_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Record a ductoscopy procedure (validated whole; nothing is saved when anything is wrong)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    data = _read_json(file)
    if len(image) > len(IMAGE_FIELDS):
        raise ValidationError(
            "too many images", problems=[Problem("--image", f"at most {len(IMAGE_FIELDS)}")]
        )
    free = [k for k in IMAGE_FIELDS if not data.get(k)]
    for key, path in zip(free, image, strict=False):
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ValidationError(
                "cannot read the image", problems=[Problem("--image", str(exc))]
            ) from None
        data[key] = store_image(cfg.uploads_dir, content)
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        outcome = save_procedure(
            session,
            subject=found,
            data=data,
            actor=_actor(actor),
            record_id=record_id,
            expected_version=version,
            reason=reason,
            uploads_dir=cfg.uploads_dir,
            vault=_context.vault(cfg),
            lang=lang,
        )
        payload = outcome.to_dict()
    if json_out:
        _context.print_json(payload)
        return
    typer.echo(f"saved procedure record {payload['record_id']} (version {payload['version']})")
    _print_findings(payload["findings"])
    for pending in payload["pending_results"]:
        typer.echo(f"  pathology result #{pending['instance']} due {pending['due']}")
    if payload["course_dates"]:
        typer.echo(f"  lavage course dated from {payload['course_dates'][0][1]}")


@app.command("report")
def report_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="File to write: .pdf or .html."),
    record_id: int | None = typer.Option(None, "--record", help="Procedure record id."),
    log: bool = typer.Option(False, "--log", help="Write the procedure log per operator instead."),
    protocol: str = typer.Option(
        "lavage-observational", "--protocol", "-p", help="Protocol of the operator log."
    ),
    operator: str | None = typer.Option(None, "--operator", help="Only this operator's log."),
    lang: str = LANG_OPT,
) -> None:
    """Write a procedure report (--record) or the operator log (--log) as PDF or HTML."""
    if (record_id is None) == (not log):
        raise ValidationError(
            "say what to report", problems=[Problem("--record", "give --record ID or --log")]
        )
    cfg = _context.settings()
    engine = _context.engine(cfg)
    html_out = out.suffix.lower() in (".html", ".htm")
    with session_scope(engine) as session:
        if record_id is not None:
            page = report.procedure_report_html(
                session, record_id=record_id, lang=lang, uploads_dir=cfg.uploads_dir
            )
        else:
            page = report.operator_log_html(
                session, protocol_id=protocol, operator=operator, lang=lang
            )
    if html_out:
        out.write_text(page, encoding="utf-8")
    else:
        from ductal.procedure._render import html_to_pdf

        out.write_bytes(html_to_pdf(page))
    typer.echo(f"wrote {out}")


@app.command("instructions")
def instructions_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="File to write: .pdf or .html."),
    lang: str = LANG_OPT,
    site: str | None = typer.Option(
        None, "--site", help="Site code (default: the only site in the database)."
    ),
    day: str | None = typer.Option(None, "--date", help="Session date printed on the sheet."),
    subject: str | None = typer.Option(
        None, "--subject", "-s", help="Personalise for this subject (its site)."
    ),
    with_name: bool = typer.Option(
        False, "--with-name", help="Print the patient's name (admin or investigator only)."
    ),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Write the patient instruction sheet (blank name line unless --with-name is allowed)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    when = _date(day, "--date")
    with session_scope(engine) as session:
        if subject is not None:
            found = records.get_subject(session, subject)
            details = instructions.subject_sheet(
                session,
                subject=found,
                lang=lang,
                session_date=when,
                viewer=_actor(actor),
                include_name=with_name,
                vault=_context.vault(cfg),
            )
        else:
            if with_name:
                raise ValidationError(
                    "no subject", problems=[Problem("--with-name", "needs --subject")]
                )
            code = site
            if code is None:
                codes = list(session.scalars(select(Site.code).order_by(Site.code)))
                if len(codes) != 1:
                    raise ValidationError(
                        "say which site",
                        problems=[Problem("--site", f"one of: {', '.join(codes) or 'no sites'}")],
                    )
                code = codes[0]
            details = instructions.site_sheet(
                session,
                site_code=code,
                lang=lang,
                session_date=when,
                protocol=builtin_protocol("lavage-observational"),
            )
    if out.suffix.lower() in (".html", ".htm"):
        out.write_text(instructions.render_instructions_html(details), encoding="utf-8")
    else:
        out.write_bytes(instructions.render_instructions_pdf(details))
    typer.echo(f"wrote {out}")


@app.command("pending")
def pending(
    overdue: bool = typer.Option(False, "--overdue", help="Only results past their due date."),
    today: str | None = TODAY_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """List the pathology results still awaited (oldest due first)."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    when = _date(today, "--today") or dt.date.today()
    with session_scope(engine) as session:
        rows = [r.to_dict() for r in pathology.pending_results(session, today=when)]
    if overdue:
        rows = [r for r in rows if r["overdue"]]
    if json_out:
        _context.print_json(rows)
        return
    for r in rows:
        late = f"  OVERDUE {r['days_overdue']} d" if r["overdue"] else ""
        typer.echo(
            f"{r['study_id']:<10} #{r['instance']:<3} {r['sample_type']:<9} "
            f"taken {r['sample_date']}  due {r['due']}{late}"
        )
    typer.echo(f"{len(rows)} result(s) awaited")


@app.command("result")
def result(
    subject: str = typer.Argument(..., help="Study id, e.g. LAV-0003."),
    instance: int = typer.Option(..., "--instance", help="Number of the awaited result."),
    file: Path = typer.Option(..., "--file", "-f", help="JSON answers of the pathology form."),
    actor: str | None = ACTOR_OPT,
) -> None:
    """Enter a pathology result; a suspicious or malignant one flags the subject."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        outcome = pathology.enter_result(
            session,
            subject=found,
            instance=instance,
            data=_read_json(file),
            actor=_actor(actor),
            vault=_context.vault(cfg),
        )
        flagged = outcome.flagged
    typer.echo(f"result #{instance} saved")
    if flagged:
        typer.echo("  FLAGGED for investigator review: no further lavage")


@app.command("course")
def course_cmd(
    subject: str = typer.Argument(..., help="Study id, e.g. LAV-0003."),
    today: str | None = TODAY_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Show a subject's lavage course: visits, missed or late ones, adherence."""
    cfg = _context.settings()
    engine = _context.engine(cfg)
    when = _date(today, "--today") or dt.date.today()
    with session_scope(engine) as session:
        found = records.get_subject(session, subject)
        payload = course.course_status(session, subject=found, today=when).to_dict()
    if json_out:
        _context.print_json(payload)
        return
    if payload["first_session"] is None:
        typer.echo(f"{subject}: no lavage session recorded yet")
        return
    for v in payload["visits"]:
        done = f"done {v['done_on']}" if v["done_on"] else ""
        typer.echo(
            f"  cycle {v['cycle']} {v['code']:<9} due {v['due']} "
            f"[{v['window_start']}..{v['window_end']}] {v['status']:<8} {done}".rstrip()
        )
    adherence = payload["adherence"]
    share = "–" if adherence is None else f"{100 * adherence:.0f}%"
    typer.echo(f"deviations {payload['deviations']}, adherence {share}")
