"""The procedure report for the medical record, and the procedure log per operator.

The report lays out one ductoscopy record — session, ducts, equipment, the checklist with its
times, anaesthesia, irrigation regimen, findings, still images (checked against their SHA-256),
samples, complications and the rule findings — with labels taken from the protocol's form, so it
reads in English or Chinese. It identifies the subject by study id only.

The operator log counts, per operator, sessions, durations and ducts cannulated, and gives the
rate of minor complications and of duct perforation with exact (Clopper–Pearson) 95% intervals
and an exact binomial test against the protocol's published benchmarks
(:func:`ductal.stats.proportions.proportion`).
"""

from __future__ import annotations

import base64
import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import records
from ductal.backup import evidence_stamp
from ductal.errors import DuctalError, NotFound
from ductal.models import FormRecord, Site, Subject
from ductal.procedure import checks, pathology
from ductal.procedure._render import css_text, html_to_pdf, render
from ductal.procedure.record import IMAGE_FIELDS, read_image
from ductal.procedure.regimen import baseline_data, evaluate_regimen
from ductal.procedure.rules import max_minutes, procedure_settings
from ductal.protocols.logic import is_blank
from ductal.protocols.model import FormDef, Protocol
from ductal.stats.proportions import ProportionResult, proportion

MINOR_GRADES = (1, 2)
MINOR_BENCHMARK = "ductoscopy_minor_complications"
PERFORATION_BENCHMARK = "ductoscopy_perforation"

_TEXT = {
    "en": {
        "title": "Ductoscopy procedure report",
        "subject": "Study id",
        "protocol": "Protocol",
        "record": "Record",
        "printed": "Printed",
        "session": "Session",
        "ducts": "Ducts",
        "equipment": "Equipment",
        "steps": "Checklist",
        "step": "Step",
        "time": "Time",
        "not_done": "not done",
        "regimen": "Anaesthesia and irrigation",
        "findings": "Findings",
        "images": "Still images",
        "image_bad": "cannot be shown",
        "samples": "Samples and results",
        "complications": "Complications",
        "alerts": "Rule findings",
        "checks": "Pre-session checks",
        "overridden": "overridden by an investigator",
        "none": "none",
        "pending": "result awaited, due",
        "done": "result entered",
        "notes": "Notes",
        "footer": "Ductoscopy procedure report",
        "log_title": "Procedure log by operator",
        "operator": "Operator",
        "sessions": "Sessions",
        "duration": "Duration, median (range), min",
        "over_limit": "Over the time limit",
        "cannulated": "Ducts cannulated, total (mean)",
        "minor": "Minor complications",
        "perforation": "Duct perforation",
        "benchmark": "Benchmark",
        "all": "All operators",
        "method": (
            "Rates with exact Clopper–Pearson 95% confidence intervals; p: two-sided exact "
            "binomial test against the benchmark. Minor complication: any complication of grade "
            "1–2 (CTCAE)."
        ),
    },
    "zh": {
        "title": "乳管镜操作报告",
        "subject": "受试者编号",
        "protocol": "研究方案",
        "record": "记录",
        "printed": "打印日期",
        "session": "操作信息",
        "ducts": "乳管",
        "equipment": "器械",
        "steps": "操作步骤核查",
        "step": "步骤",
        "time": "时间",
        "not_done": "未做",
        "regimen": "麻醉及冲洗方案",
        "findings": "镜下所见",
        "images": "图像",
        "image_bad": "无法显示",
        "samples": "取材及结果",
        "complications": "并发症",
        "alerts": "规则提示",
        "checks": "操作前核查",
        "overridden": "已由研究者豁免",
        "none": "无",
        "pending": "等待结果，预计",
        "done": "已录入结果",
        "notes": "备注",
        "footer": "乳管镜操作报告",
        "log_title": "术者操作记录汇总",
        "operator": "术者",
        "sessions": "操作例次",
        "duration": "操作时长，中位数（范围），分钟",
        "over_limit": "超过时限",
        "cannulated": "插管乳管数，合计（均数）",
        "minor": "轻微并发症",
        "perforation": "乳管穿孔",
        "benchmark": "文献参考值",
        "all": "全部术者",
        "method": (
            "率的95%置信区间采用Clopper–Pearson精确法；p为与文献参考值比较的双侧精确二项检验。"
            "轻微并发症：CTCAE 1–2级的任何并发症。"
        ),
    },
}


LEVEL_NAMES = {
    "en": {
        "block": "Blocking",
        "query": "Query",
        "warn": "Warning",
        "advice": "Advice",
        "info": "Note",
    },
    "zh": {"block": "阻断", "query": "质疑", "warn": "警告", "advice": "建议", "info": "提示"},
}


def _lang(lang: str) -> str:
    return "zh" if lang.lower().startswith("zh") else "en"


def _value(form: FormDef, key: str, value: Any, lang: str) -> str:
    if is_blank(value):
        return "–"
    field = form.field(key)
    if field.type == "choice":
        return field.choice_label(str(value), lang)
    if field.type == "multi_choice":
        return ", ".join(field.choice_label(str(v), lang) for v in value)
    if field.type == "yes_no":
        return {"en": ("No", "Yes"), "zh": ("否", "是")}[lang][int(value)]
    if field.type == "datetime":
        return str(value)[11:16]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value} {field.unit}" if field.unit else str(value)


def _rows(form: FormDef, data: Mapping[str, Any], keys: Sequence[str], lang: str) -> list[Any]:
    out = []
    for key in keys:
        if key in data:
            out.append((form.field(key).label.get(lang), _value(form, key, data[key], lang)))
    return out


def _image_uri(uploads_dir: Path, ref: str) -> str | None:
    try:
        content = read_image(uploads_dir, ref)
    except DuctalError:
        return None
    kind = "png" if content.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(content).decode()


def procedure_report_html(
    session: Session,
    *,
    record_id: int,
    lang: str = "en",
    uploads_dir: Path | None = None,
    today: dt.date | None = None,
) -> str:
    """Return the printable report of one ductoscopy procedure record."""
    lang = _lang(lang)
    text = _TEXT[lang]
    record = session.get(FormRecord, record_id)
    if record is None:
        raise NotFound(f"no record {record_id}")
    subject = session.get(Subject, record.subject_id)
    assert subject is not None
    protocol = records.subject_protocol(subject)
    settings = procedure_settings(protocol)
    if record.form_key != settings.record_form:
        raise NotFound(f"record {record_id} is not a {settings.record_form} record")
    form = protocol.form(settings.record_form)
    data = record.data
    site = session.get(Site, subject.site_id)
    steps = [
        (
            number,
            form.field(step.field).label.get(lang),
            _value(form, step.field, data.get(step.field), lang)
            if step.field in data
            else text["not_done"],
        )
        for number, step in enumerate(settings.steps, start=1)
    ]
    images = []
    for key in IMAGE_FIELDS:
        ref = data.get(key)
        if ref:
            uri = _image_uri(uploads_dir, ref) if uploads_dir is not None else None
            images.append({"label": form.field(key).label.get(lang), "ref": ref, "uri": uri})
    findings = evaluate_regimen(
        protocol, record.form_key, data, baseline=baseline_data(session, subject), lang=lang
    )
    day = dt.date.fromisoformat(data["procedure_date"])
    report = checks.checks_for_day(session, subject=subject, day=day, lang=lang)
    samples = [
        r
        for r in pathology.pending_results(
            session, today=today or dt.date.today(), subject=subject, include_done=True
        )
        if r.sample_date == day
    ]
    sample_field = protocol.form(settings.pathology.form).field("sample_type")
    return render(
        "procedure_report.html.j2",
        lang=lang,
        html_lang="zh-Hans" if lang == "zh" else "en",
        t=text,
        footer=css_text(f"{subject.study_id} · {text['footer']}"),
        site_name=site.name if site else "",
        study_id=subject.study_id,
        protocol=f"{protocol.title.get(lang)} ({protocol.id} {protocol.version})",
        record=f"#{record.id} v{record.version} ({record.status})",
        printed=(today or dt.date.today()).isoformat(),
        evidence=evidence_stamp(session),
        session_rows=_rows(
            form,
            data,
            ["procedure_date", "operator", "side", "start_time", "end_time", "duration_min"],
            lang,
        ),
        duct_rows=_rows(
            form, data, ["ducts_identified", "ducts_cannulated", "duct_positions"], lang
        ),
        equipment_rows=_rows(
            form,
            data,
            ["scope_diameter_mm", "magnification", "dilator_first_mm", "dilator_last_mm"],
            lang,
        ),
        steps=steps,
        regimen_rows=_rows(
            form,
            data,
            [
                "anaesthesia",
                "irrigation_volume_ml",
                "lidocaine_percent",
                "steroid_agent",
                "steroid_dose_mg",
                "culture",
                "purulent_aspirate",
                "antibiotic_added",
                "antibiotic_agent",
                "antibiotic_mg_per_ml",
            ],
            lang,
        ),
        finding_rows=_rows(
            form,
            data,
            [
                "finding",
                "inflammation_features",
                "lesion_type",
                "finding_clock",
                "finding_depth_mm",
            ],
            lang,
        ),
        images=images,
        sample_rows=_rows(form, data, ["biopsy_taken", "cytology_taken"], lang),
        samples=[
            (
                sample_field.choice_label(s.sample_type, lang),
                text["pending"] + " " + s.due.isoformat()
                if s.status == "scheduled"
                else text["done"],
            )
            for s in samples
        ],
        complication_rows=_rows(
            form, data, ["pain_score", "complications", "complication_grade"], lang
        ),
        alerts=findings,
        checks=report,
        levels=LEVEL_NAMES[lang],
        notes=data.get("notes"),
    )


def procedure_report_pdf(
    session: Session,
    *,
    record_id: int,
    lang: str = "en",
    uploads_dir: Path | None = None,
    today: dt.date | None = None,
) -> bytes:
    """Return the procedure report as PDF bytes."""
    return html_to_pdf(
        procedure_report_html(
            session, record_id=record_id, lang=lang, uploads_dir=uploads_dir, today=today
        )
    )


# --- the operator log -------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorSummary:
    """One operator's sessions, durations, ducts and complication rates."""

    operator: str
    sessions: int
    duration_median: float | None
    duration_min: float | None
    duration_max: float | None
    over_limit: int
    ducts_cannulated: int
    minor: ProportionResult
    perforation: ProportionResult

    @property
    def ducts_mean(self) -> float:
        return self.ducts_cannulated / self.sessions

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "sessions": self.sessions,
            "duration_median": self.duration_median,
            "duration_min": self.duration_min,
            "duration_max": self.duration_max,
            "over_limit": self.over_limit,
            "ducts_cannulated": self.ducts_cannulated,
            "ducts_mean": self.ducts_mean,
            "minor_complications": self.minor.to_dict(),
            "perforation": self.perforation.to_dict(),
        }


def is_minor(data: Mapping[str, Any]) -> bool:
    """Return True when a record has a complication of grade 1–2."""
    found = [c for c in data.get("complications") or [] if c != "none"]
    return bool(found) and data.get("complication_grade") in MINOR_GRADES


def is_perforation(data: Mapping[str, Any]) -> bool:
    return "perforation" in (data.get("complications") or [])


def summarise(
    operator: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    limit_minutes: float | None,
    minor_benchmark: float | None,
    perforation_benchmark: float | None,
) -> OperatorSummary:
    """Return the summary of one operator's procedure records (pure; ``rows`` non-empty)."""
    durations = [float(r["duration_min"]) for r in rows if r.get("duration_min") is not None]
    n = len(rows)
    return OperatorSummary(
        operator=operator,
        sessions=n,
        duration_median=statistics.median(durations) if durations else None,
        duration_min=min(durations) if durations else None,
        duration_max=max(durations) if durations else None,
        over_limit=sum(1 for d in durations if limit_minutes is not None and d > limit_minutes),
        ducts_cannulated=sum(int(r.get("ducts_cannulated") or 0) for r in rows),
        minor=proportion(sum(1 for r in rows if is_minor(r)), n, benchmark=minor_benchmark),
        perforation=proportion(
            sum(1 for r in rows if is_perforation(r)), n, benchmark=perforation_benchmark
        ),
    )


def _benchmark(protocol: Protocol, key: str) -> float | None:
    for mark in protocol.benchmarks:
        if mark.key == key:
            return mark.low
    return None


def operator_log(
    session: Session,
    *,
    protocol_id: str,
    site_ids: Iterable[int] | None = None,
    operator: str | None = None,
) -> tuple[list[OperatorSummary], OperatorSummary | None]:
    """Return one summary per operator (by name) and one for all operators together."""
    protocol = records.protocol_of(records.latest_protocol_version(session, protocol_id))
    settings = procedure_settings(protocol)
    stmt = (
        select(FormRecord)
        .join(Subject, Subject.id == FormRecord.subject_id)
        .where(FormRecord.form_key == settings.record_form, Subject.protocol_id == protocol_id)
        .order_by(FormRecord.id)
    )
    if site_ids is not None:
        stmt = stmt.where(Subject.site_id.in_(list(site_ids)))
    by_operator: dict[str, list[dict[str, Any]]] = {}
    for record in session.scalars(stmt):
        name = str(record.data.get("operator", "?"))
        if operator is None or name == operator:
            by_operator.setdefault(name, []).append(dict(record.data))
    options = {
        "limit_minutes": max_minutes(protocol),
        "minor_benchmark": _benchmark(protocol, MINOR_BENCHMARK),
        "perforation_benchmark": _benchmark(protocol, PERFORATION_BENCHMARK),
    }
    summaries = [summarise(k, v, **options) for k, v in sorted(by_operator.items())]
    everyone = [r for rows in by_operator.values() for r in rows]
    total = summarise("*", everyone, **options) if everyone else None
    return summaries, total


def _rate(result: ProportionResult) -> str:
    text = (
        f"{result.events}/{result.n} = {100 * result.estimate:.1f}% "
        f"({100 * result.lower:.1f}–{100 * result.upper:.1f})"
    )
    if result.p_value is not None:
        text += f", p = {result.p_value:.3g}"
    return text


def operator_log_html(
    session: Session,
    *,
    protocol_id: str,
    site_ids: Iterable[int] | None = None,
    operator: str | None = None,
    lang: str = "en",
    today: dt.date | None = None,
) -> str:
    """Return the operator log as a printable HTML page."""
    lang = _lang(lang)
    text = _TEXT[lang]
    summaries, total = operator_log(
        session, protocol_id=protocol_id, site_ids=site_ids, operator=operator
    )
    protocol = records.protocol_of(records.latest_protocol_version(session, protocol_id))
    marks = [m for m in protocol.benchmarks if m.key in (MINOR_BENCHMARK, PERFORATION_BENCHMARK)]

    def row(s: OperatorSummary, name: str) -> dict[str, str]:
        duration = (
            f"{s.duration_median:.1f} ({s.duration_min:.1f}–{s.duration_max:.1f})"
            if s.duration_median is not None
            and s.duration_min is not None
            and s.duration_max is not None
            else "–"
        )
        return {
            "operator": name,
            "sessions": str(s.sessions),
            "duration": duration,
            "over_limit": str(s.over_limit),
            "cannulated": f"{s.ducts_cannulated} ({s.ducts_mean:.1f})",
            "minor": _rate(s.minor),
            "perforation": _rate(s.perforation),
        }

    rows = [row(s, s.operator) for s in summaries]
    if total is not None and len(summaries) > 1:
        rows.append(row(total, text["all"]))
    return render(
        "operator_log.html.j2",
        html_lang="zh-Hans" if lang == "zh" else "en",
        t=text,
        footer=css_text(f"{protocol.id} · {text['log_title']}"),
        protocol=f"{protocol.title.get(lang)} ({protocol.id} {protocol.version})",
        printed=(today or dt.date.today()).isoformat(),
        evidence=evidence_stamp(session),
        rows=rows,
        limit=max_minutes(protocol),
        marks=[(m.label.get(lang), f"{100 * m.low:.0f}%", m.source) for m in marks],
    )


def operator_log_pdf(session: Session, **options: Any) -> bytes:
    """Return the operator log as PDF bytes (options as :func:`operator_log_html`)."""
    return html_to_pdf(operator_log_html(session, **options))
