"""Build the efficacy report: extract → derive → statistics → figures → HTML (and PDF).

``build_report`` writes ``DIR/report.html``, ``DIR/report.pdf``, ``DIR/figures/*.png`` and
``DIR/tables/*.csv`` and returns where they are with the time each stage took.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from matplotlib.figure import Figure
from sqlalchemy import Engine

from ductal.backup import evidence_stamp
from ductal.db import session_scope
from ductal.errors import Problem, ValidationError
from ductal.outcomes.dataset import AnalysisData, derive
from ductal.outcomes.extract import extract_study, registered_protocols
from ductal.reports import descriptive, efficacy, style
from ductal.reports.i18n import LANGUAGES, t
from ductal.reports.model import ProtocolReport, Section

HTML_ROWS = 30  # longer tables are cut in the HTML/PDF; the CSV has every row
STAGES = ("extract", "derive", "statistics", "figures", "render", "pdf")

SectionFn = Callable[[AnalysisData, str], "tuple[Section, dict[str, Any]] | None"]
SECTIONS: tuple[SectionFn, ...] = (
    descriptive.consort,
    descriptive.table_one,
    efficacy.cr_rate,
    efficacy.time_to_cr,
    efficacy.competing,
    efficacy.relapse,
    efficacy.subgroups,
    efficacy.comparison,
    efficacy.adaptive,
    descriptive.course,
    descriptive.safety,
    descriptive.completeness,
)


@dataclass
class ReportOutput:
    """Where the report was written and how long each stage took (seconds)."""

    directory: Path
    html: Path
    pdf: Path | None
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cpu_timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    reports: list[ProtocolReport] = field(default_factory=list)
    not_computed: list[str] = field(default_factory=list)


def analyse(data: AnalysisData, lang: str = "en") -> ProtocolReport:
    """Return the report of one protocol: every section, computed from the analysis data."""
    protocol = data.protocol
    sections: list[Section] = []
    results: dict[str, Any] = {}
    if data.screening.empty:
        empty = Section("overview", t("sec_overview", lang))
        empty.skip(t("empty_study", lang))
        sections.append(empty)
    else:
        for fn in SECTIONS:
            out = fn(data, lang)
            if out is None:
                continue
            section, res = out
            sections.append(section)
            results[section.key] = res
    facts = [
        (t("fact_id", lang), f"{protocol.id} {protocol.version}"),
        (t("fact_design", lang), t(f"design_{protocol.design}", lang)),
        (t("fact_registration", lang), protocol.registration or "–"),
        (t("fact_arms", lang), ", ".join(a.label.get(lang) for a in protocol.arms)),
        (t("screened", lang), str(len(data.screening))),
        (t("enrolled", lang), str(len(data.subjects))),
        (
            t("fact_endpoint", lang),
            t(
                "endpoint_fact",
                lang,
                days=data.horizon_days + data.horizon_grace_days,
                horizon=data.horizon_days,
                grace=data.horizon_grace_days,
                competing=efficacy.therapy_labels(data, data.competing, lang) or "–",
            ),
        ),
    ]
    return ProtocolReport(
        protocol_id=protocol.id,
        title=protocol.title.get(lang),
        description=(protocol.description.get(lang) if protocol.description else ""),
        facts=facts,
        sections=sections,
        results=results,
    )


def _html_table(frame: pd.DataFrame) -> Markup:
    shown = frame.head(HTML_ROWS)
    html = shown.to_html(index=False, classes="data", na_rep="–", escape=True, border=0)
    return Markup(html)


def _write_tables(report: ProtocolReport, out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    paths = []
    views = []
    for section in report.sections:
        for table in section.tables:
            name = f"{report.protocol_id}_{table.key}.csv"
            path = out / "tables" / name
            (table.csv if table.csv is not None else table.frame).to_csv(path, index=False)
            paths.append(path)
            views.append(
                {
                    "section": section,
                    "html": _html_table(table.frame),
                    "note": table.note,
                    "more": max(0, len(table.frame) - HTML_ROWS),
                    "csv_name": name,
                }
            )
    return paths, views


def _draw_one(job: tuple[Callable[[], Figure], str, str]) -> str:
    """Draw one figure and write it as PNG (runs in a worker process when drawing in parallel)."""
    draw, path, lang = job
    with style.context(lang):
        style.save_png(draw(), Path(path))
    return path


def _draw_figures(
    reports: Sequence[ProtocolReport], out: Path, lang: str, workers: int
) -> list[Path]:
    jobs: list[tuple[Callable[[], Figure], str, str]] = []
    for report in reports:
        for section in report.sections:
            for spec in section.figures:
                name = f"{report.protocol_id}_{spec.key}.png"
                spec.path = f"figures/{name}"
                jobs.append((spec.draw, str(out / "figures" / name), lang))
    forkable = "fork" in mp.get_all_start_methods() and threading.active_count() == 1
    if workers > 1 and len(jobs) >= 2 * workers and forkable:
        # figures are independent and CPU-bound: one process per core (fork: no re-imports;
        # only from a single-threaded process, e.g. the CLI, never inside a threaded server)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            done = list(pool.map(_draw_one, jobs))
    else:
        done = [_draw_one(job) for job in jobs]
    return [Path(p) for p in done]


class _Clock:
    """Adds the wall and CPU time (this process and its children) of a stage to two dicts."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]) -> None:
        self.wall, self.cpu = wall, cpu

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), _cpu()
        try:
            yield
        finally:
            self.wall[name] += time.perf_counter() - start
            self.cpu[name] += _cpu() - cpu


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def build_report(
    engine: Engine,
    out_dir: Path | str,
    *,
    protocol_ids: Sequence[str] | None = None,
    lang: str = "en",
    pdf: bool = True,
    database_label: str = "",
    workers: int | None = None,
) -> ReportOutput:
    """Write the efficacy report of ``protocol_ids`` (default: every registered protocol)."""
    if lang not in LANGUAGES:
        raise ValidationError(
            "unknown language",
            problems=[Problem("lang", f"must be one of {', '.join(LANGUAGES)}")],
        )
    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    timings = dict.fromkeys(STAGES, 0.0)
    output = ReportOutput(directory=out, html=out / "report.html", pdf=None, timings=timings)
    views: list[dict[str, Any]] = []

    clock = _Clock(timings, output.cpu_timings)
    with clock.stage("extract"), session_scope(engine) as session:
        ids = list(protocol_ids) if protocol_ids else registered_protocols(session)
        # stamped before reading: every change the report reflects is covered by this head
        evidence = evidence_stamp(session)
        extracts = [extract_study(session, pid) for pid in ids]

    for extract in extracts:
        with clock.stage("derive"):
            data = derive(extract)
        del extract
        with clock.stage("statistics"):
            output.reports.append(analyse(data, lang))
        del data
    extracts.clear()

    with clock.stage("figures"):
        output.figures = _draw_figures(output.reports, out, lang, workers or _default_workers())

    with clock.stage("render"):
        for report in output.reports:
            paths, table_views = _write_tables(report, out)
            output.tables += paths
            views.append({"report": report, "tables": table_views})
            for section in report.sections:
                output.not_computed += [
                    f"{report.protocol_id} / {section.title}: {r}" for r in section.not_computed
                ]
        html = _render_html(views, lang, database_label, evidence)
        (out / "evidence.json").write_text(json.dumps(evidence, indent=2) + "\n")
        output.html.write_text(html, encoding="utf-8")

    if pdf:
        with clock.stage("pdf"):
            from weasyprint import HTML

            output.pdf = out / "report.pdf"
            HTML(string=html, base_url=str(out)).write_pdf(output.pdf)
    return output


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _render_html(
    views: list[dict[str, Any]], lang: str, database_label: str, evidence: dict[str, Any]
) -> str:
    env = Environment(
        loader=PackageLoader("ductal.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    reports = []
    for view in views:
        report: ProtocolReport = view["report"]
        sections = []
        for section in report.sections:
            sections.append(
                {
                    "key": section.key,
                    "title": section.title,
                    "paragraphs": section.paragraphs,
                    "tables": [tv for tv in view["tables"] if tv["section"] is section],
                    "figures": section.figures,
                    "not_computed": section.not_computed,
                    "subjects": section.subjects,
                }
            )
        reports.append(
            {
                "protocol_id": report.protocol_id,
                "title": report.title,
                "description": report.description,
                "facts": report.facts,
                "sections": sections,
            }
        )
    title = t("report_title", lang)
    if len(reports) == 1:
        title = f"{title}: {reports[0]['title']}"
    return template.render(
        title=title,
        lang=lang,
        reports=reports,
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        database=database_label or "–",
        evidence=evidence,
        t=lambda key, **kw: t(key, lang, **kw),
    )
