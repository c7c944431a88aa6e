"""``ductal protocols``: list, show and check study protocol definitions."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from ductal.errors import ProtocolError
from ductal.protocols.loader import builtin_protocols, load_protocol, resolve_protocol
from ductal.protocols.overview import protocol_overview, protocol_summary

app = typer.Typer(help="List, show and check study protocols.", no_args_is_help=True)


class Lang(StrEnum):
    en = "en"
    zh = "zh"


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return lines


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@app.command("list")
def list_protocols(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    lang: Lang = typer.Option(Lang.en, "--lang", help="Language of the titles: en or zh."),
) -> None:
    """List the built-in protocols: id, version, design, arms, target enrolment and title."""
    summaries = [protocol_summary(p, lang.value) for p in builtin_protocols()]
    if as_json:
        _dump(summaries)
        return
    rows = [
        [
            s["id"],
            s["version"],
            s["design"],
            ",".join(s["arms"]),
            str(s["target_enrolment"]),
            s["title"],
        ]
        for s in summaries
    ]
    for line in _table(rows, ["id", "version", "design", "arms", "target", "title"]):
        typer.echo(line)


def _window(event: dict[str, Any]) -> str:
    before, after = event["window_before"], event["window_after"]
    if before == after:
        return f"±{before}" if before else "-"
    return f"-{before}/+{after}"


def _render(view: dict[str, Any]) -> list[str]:
    out = [f"{view['id']} {view['version']}: {view['title']}"]
    facts = [
        ("design", view["design"]),
        ("registration", view["registration"]),
        ("sponsor", view["sponsor"]),
        ("study id prefix", view["study_id_prefix"]),
        ("target enrolment", view["target_enrolment"]),
        ("follow-up days", view["follow_up_days"]),
        ("sha256", view["sha256"]),
    ]
    out += [f"  {name}: {value}" for name, value in facts if value is not None]
    if view["description"]:
        out += ["", view["description"]]

    out += ["", "Arms"]
    out += [f"  {a['key']} (ratio {a['ratio']}): {a['label']}" for a in view["arms"]]
    rand = view["randomisation"]
    if rand["method"] != "none":
        sizes = ", ".join(str(s) for s in rand["block_sizes"])
        out.append(f"  randomisation: {rand['method']}, block sizes {sizes}")
    for s in view["strata"]:
        out.append(f"  stratum {s['key']}: {s['form']}.{s['field']} in {', '.join(s['levels'])}")

    out += ["", f"Eligibility (form {view['screening_form']})"]
    out += [f"  {e['kind']} {e['key']}: {e['expr']}  ({e['message']})" for e in view["eligibility"]]

    out += ["", "Schedule of events"]
    rows = []
    for e in view["schedule"]:
        repeat = e["repeat"]
        day = str(e["day"])
        if repeat:
            day += f" every {repeat['every_days']} d ×{repeat['count']}"
        rows.append(
            [
                e["key"],
                e["kind"],
                day,
                _window(e),
                ",".join(e["arms"]) or "all",
                ",".join(e["forms"]),
            ]
        )
    out += [
        "  " + line for line in _table(rows, ["event", "kind", "day", "window", "arms", "forms"])
    ]

    for form in view["forms"]:
        title = f"Form {form['key']}: {form['title']}" + (
            " (repeating)" if form["repeating"] else ""
        )
        out += ["", title]
        rows = []
        for f in form["fields"]:
            rows.append(
                [
                    f["key"],
                    f["type"],
                    f["unit"] or "",
                    f["range"] or "",
                    "yes" if f["required"] else "",
                    f["show_if"] or f["calc"] or "",
                    f["label"],
                ]
            )
        header = ["field", "type", "unit", "range", "required", "branching / calc", "label"]
        out += ["  " + line for line in _table(rows, header)]
        for f in form["fields"]:
            if f["choices"]:
                codes = ", ".join(f"{c['code']}={c['label']}" for c in f["choices"])
                out.append(f"  {f['key']} choices: {codes}")
        for r in form["rules"]:
            when = f"when {r['when']}: " if r["when"] else ""
            out.append(f"  rule {r['key']}: {when}{r['expr']}  ({r['message']})")

    out += ["", "Endpoints"]
    for e in view["endpoints"]:
        extra = []
        if e["primary"]:
            extra.append("primary")
        if e["competing"]:
            extra.append("competing " + ",".join(e["competing"]))
        if e["horizon_days"]:
            extra.append(f"horizon {e['horizon_days']} d")
        if e["non_inferiority_margin"] is not None:
            extra.append(f"NI margin {e['non_inferiority_margin']:+g}")
        details = "; ".join([f"event {e['event']}", *extra])
        out.append(f"  {e['key']} ({e['kind']}, {details}): {e['label']}")
    if view["benchmarks"]:
        out += ["", "Benchmarks"]
        for b in view["benchmarks"]:
            span = f"{b['low']:g}" + (f"–{b['high']:g}" if b["high"] is not None else "")
            out.append(f"  {b['key']} {b['measure']} {span}: {b['label']} [{b['source']}]")
    if view["settings"]:
        out += ["", "Settings"]
        out += [f"  {k}: {v}" for k, v in view["settings"].items()]
    return out


@app.command("show")
def show(
    ref: str = typer.Argument(..., metavar="ID_OR_FILE", help="A built-in id or a YAML file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
    lang: Lang = typer.Option(Lang.en, "--lang", help="Language of labels: en or zh."),
) -> None:
    """Show a protocol: arms, strata, eligibility, schedule, forms and fields, endpoints."""
    view = protocol_overview(resolve_protocol(ref), lang.value)
    if as_json:
        _dump(view)
        return
    for line in _render(view):
        typer.echo(line)


@app.command("check")
def check(
    path: Path = typer.Argument(..., metavar="FILE", help="The protocol YAML file to check."),
) -> None:
    """Check a protocol file; print every problem with its path and exit 1 if there are any."""
    try:
        protocol = load_protocol(path)
    except ProtocolError as exc:
        typer.echo(f"{exc.message}:")
        for problem in exc.problems:
            typer.echo(f"  {problem.field}: {problem.message}")
        raise typer.Exit(code=1) from None
    fields = sum(len(f.fields) for f in protocol.forms)
    typer.echo(
        f"ok: {protocol.id} {protocol.version} ({len(protocol.arms)} arm(s), "
        f"{len(protocol.schedule)} events, {len(protocol.forms)} forms, {fields} fields)"
    )
