"""The data of each page, computed once; routes render it as HTML (pages) or JSON (API).

Nothing here writes. Every function takes the principal so that it returns only what that user
may see: subjects of their own sites, pseudonymised (direct identifiers never appear here; they
are shown to admins on the identity page alone).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from ductal import forms, records
from ductal.models import (
    AuditEntry,
    DataQuery,
    Event,
    FormRecord,
    ProtocolVersion,
    Signature,
    Site,
    Subject,
)
from ductal.protocols.logic import parse
from ductal.protocols.model import FieldDef, FormDef, Protocol
from ductal.protocols.overview import field_overview
from ductal.web.access import Principal

MASK = "•••"  # shown instead of a field flagged as a direct identifier


def protocol_text_lang(lang: str) -> str:
    """Return the protocol label language for an interface language."""
    return "zh" if lang.startswith("zh") else "en"


def site_codes(db: Session) -> dict[int, str]:
    return {s.id: s.code for s in db.scalars(select(Site))}


def protocols(db: Session, lang: str) -> list[dict[str, Any]]:
    """Return the latest version of every registered protocol, with its title in ``lang``."""
    latest: dict[str, ProtocolVersion] = {}
    for pv in db.scalars(select(ProtocolVersion).order_by(ProtocolVersion.id)):
        latest[pv.protocol_id] = pv
    out = []
    for pid, pv in sorted(latest.items()):
        proto = records.protocol_of(pv)
        out.append(
            {
                "id": pid,
                "version": pv.version,
                "title": proto.title.get(protocol_text_lang(lang)),
                "design": proto.design,
                "target_enrolment": proto.target_enrolment,
                "randomised": proto.is_randomised,
            }
        )
    return out


def subject_dict(subject: Subject, codes: dict[int, str]) -> dict[str, Any]:
    """Return the pseudonymised facts of a subject."""
    return {
        "study_id": subject.study_id,
        "protocol": subject.protocol_id,
        "protocol_version": subject.protocol_version.version,
        "site": codes.get(subject.site_id, str(subject.site_id)),
        "arm": subject.arm,
        "stratum": subject.stratum,
        "status": subject.status,
        "status_reason": subject.status_reason,
        "screened_on": subject.screened_on.isoformat() if subject.screened_on else None,
        "enrolled_on": subject.enrolled_on.isoformat() if subject.enrolled_on else None,
    }


def subject_query(
    principal: Principal,
    *,
    protocol_id: str | None = None,
    site_id: int | None = None,
    status: str | None = None,
    q: str | None = None,
) -> Any:
    """Return the SELECT of the subjects the user may see, filtered as asked."""
    visible = principal.sites("view")
    stmt = select(Subject).where(Subject.site_id.in_(visible)).order_by(Subject.study_id)
    if protocol_id:
        stmt = stmt.where(Subject.protocol_id == protocol_id)
    if site_id is not None:
        stmt = stmt.where(Subject.site_id == site_id)
    if status:
        stmt = stmt.where(Subject.status == status)
    if q:
        stmt = stmt.where(Subject.study_id.ilike(f"%{q.strip()}%"))
    return stmt


# --- dashboard ------------------------------------------------------------------------------


def dashboard(
    db: Session, principal: Principal, protocol_id: str, *, today: dt.date | None = None
) -> dict[str, Any]:
    """Return enrolment over time per site, CONSORT counts, visits due, queries and activity."""
    today = today or dt.date.today()
    pv = records.latest_protocol_version(db, protocol_id)
    proto = records.protocol_of(pv)
    visible = principal.sites("view")
    codes = site_codes(db)
    subjects = list(
        db.scalars(
            select(Subject).where(Subject.protocol_id == protocol_id, Subject.site_id.in_(visible))
        )
    )
    status = Counter(s.status for s in subjects)
    ever_enrolled = [s for s in subjects if s.enrolled_on is not None]
    consort = {
        "screened": len(subjects),
        "ineligible": status["ineligible"],
        "eligible_not_consented": status["eligible"] + status["screened"],
        "consented_not_enrolled": status["consented"],
        "enrolled": len(ever_enrolled),
        "by_arm": dict(sorted(Counter(s.arm or "unassigned" for s in ever_enrolled).items())),
        "on_study": status["enrolled"],
        "completed": status["completed"],
        "withdrawn": status["withdrawn"],
        "lost_to_follow_up": status["lost_to_follow_up"],
    }
    # cumulative enrolment per site by month
    by_site: dict[str, list[dt.date]] = defaultdict(list)
    for s in ever_enrolled:
        assert s.enrolled_on is not None
        by_site[codes.get(s.site_id, "?")].append(s.enrolled_on)
    series = []
    for code, days in sorted(by_site.items()):
        days.sort()
        series.append(
            {"site": code, "points": [(d.isoformat(), i + 1) for i, d in enumerate(days)]}
        )
    ids = [s.id for s in subjects if s.status == "enrolled"]
    by_id = {s.id: s for s in subjects}
    due: list[dict[str, Any]] = []
    overdue: list[dict[str, Any]] = []
    if ids:
        events = db.scalars(
            select(Event)
            .where(
                Event.subject_id.in_(ids),
                Event.occurred_on.is_(None),
                Event.window_start.is_not(None),
                Event.window_start <= today,
            )
            .order_by(Event.window_end, Event.id)
        )
        for ev in events:
            spec_label = _event_label(proto, ev.event_key, "en")
            row = {
                "study_id": by_id[ev.subject_id].study_id,
                "event": ev.event_key,
                "event_label": spec_label,
                "instance": ev.instance,
                "scheduled_on": ev.scheduled_on.isoformat() if ev.scheduled_on else None,
                "window_end": ev.window_end.isoformat() if ev.window_end else None,
            }
            if ev.window_end is not None and ev.window_end < today:
                overdue.append(row)
            else:
                due.append(row)
    open_q = int(
        db.scalar(
            select(func.count())
            .select_from(DataQuery)
            .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
            .join(Subject, Subject.id == FormRecord.subject_id)
            .where(
                DataQuery.status != "closed",
                Subject.protocol_id == protocol_id,
                Subject.site_id.in_(visible),
            )
        )
        or 0
    )
    mine = select(Subject.study_id).where(
        Subject.protocol_id == protocol_id, Subject.site_id.in_(visible)
    )
    recent = [
        audit_dict(e, codes)
        for e in db.scalars(
            select(AuditEntry)
            .where(AuditEntry.subject_study_id.in_(mine))
            .order_by(AuditEntry.id.desc())
            .limit(12)
        )
    ]
    return {
        "protocol": {
            "id": proto.id,
            "version": pv.version,
            "title_en": proto.title.get("en"),
            "title_zh": proto.title.get("zh"),
            "target_enrolment": proto.target_enrolment,
            "randomised": proto.is_randomised,
            "arms": [a.key for a in proto.arms],
        },
        "today": today.isoformat(),
        "consort": consort,
        "enrolment": series,
        "enrolled_total": len(ever_enrolled),
        "visits_due": due[:50],
        "visits_due_count": len(due),
        "visits_overdue": overdue[:50],
        "visits_overdue_count": len(overdue),
        "open_queries": open_q,
        "recent_activity": recent,
    }


def _event_label(proto: Protocol, key: str, lang: str) -> str:
    try:
        return proto.event(key).label.get(protocol_text_lang(lang))
    except KeyError:
        return key


def enrolment_svg(
    series: list[dict[str, Any]], target: int, *, width: int = 640, height: int = 220
) -> str:
    """Return an inline SVG of cumulative enrolment per site against the target."""
    colours = ["#1f5f8b", "#c0392b", "#2e7d32", "#8e44ad", "#d35400", "#546e7a"]
    points = [p for s in series for p in s["points"]]
    pad_l, pad_r, pad_t, pad_b = 44, 96, 12, 28
    if not points:
        return (
            f'<svg viewBox="0 0 {width} {height}" class="chart" role="img" '
            'aria-label="no enrolment yet">'
            '<text x="50%" y="50%" text-anchor="middle">—</text></svg>'
        )
    days = sorted(dt.date.fromisoformat(p[0]) for p in points)
    start, end = days[0], max(days[-1], days[0] + dt.timedelta(days=30))
    top = max(target, max(p[1] for p in points))
    span = (end - start).days or 1

    def x(day: str) -> float:
        return pad_l + (dt.date.fromisoformat(day) - start).days / span * (width - pad_l - pad_r)

    def y(n: float) -> float:
        return height - pad_b - n / top * (height - pad_t - pad_b)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" class="chart" role="img" '
        f'aria-label="cumulative enrolment per site against a target of {target}">',
        f'<line x1="{pad_l}" y1="{y(target):.1f}" x2="{width - pad_r}" y2="{y(target):.1f}" '
        'class="target"/>',
        f'<text x="{width - pad_r + 4}" y="{y(target) + 4:.1f}" class="lbl">target {target}</text>',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" '
        'class="axis"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" class="axis"/>',
        f'<text x="{pad_l}" y="{height - 8}" class="lbl">{start.isoformat()}</text>',
        f'<text x="{width - pad_r}" y="{height - 8}" class="lbl" text-anchor="end">'
        f"{end.isoformat()}</text>",
        f'<text x="{pad_l - 6}" y="{y(0) + 4:.1f}" class="lbl" text-anchor="end">0</text>',
        f'<text x="{pad_l - 6}" y="{y(top) + 4:.1f}" class="lbl" text-anchor="end">{top}</text>',
    ]
    for i, s in enumerate(series):
        colour = colours[i % len(colours)]
        coords = [f"{x(s['points'][0][0]):.1f},{y(0):.1f}"]
        for day, n in s["points"]:
            coords.append(f"{x(day):.1f},{y(n - 1):.1f}")
            coords.append(f"{x(day):.1f},{y(n):.1f}")
        last_day, last_n = s["points"][-1]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(coords)}"/>'
        )
        parts.append(
            f'<text x="{x(last_day) + 4:.1f}" y="{y(last_n) - 4:.1f}" fill="{colour}" '
            f'class="lbl">{s["site"]} {last_n}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# --- casebook -------------------------------------------------------------------------------


def _open_query_records(db: Session, subject: Subject) -> dict[int, int]:
    rows = db.execute(
        select(DataQuery.form_record_id, func.count())
        .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
        .where(FormRecord.subject_id == subject.id, DataQuery.status != "closed")
        .group_by(DataQuery.form_record_id)
    )
    return {rid: int(n) for rid, n in rows}


def casebook(db: Session, subject: Subject, lang: str) -> dict[str, Any]:
    """Return the subject's events × forms grid with each cell's status."""
    proto = records.subject_protocol(subject)
    plang = protocol_text_lang(lang)
    events = records.subject_events(db, subject)
    recs = records.subject_records(db, subject)
    queries = _open_query_records(db, subject)
    by_event: dict[int, list[FormRecord]] = defaultdict(list)
    for r in recs:
        by_event[r.event_id].append(r)
    rows = []
    seen: set[tuple[str, int]] = set()
    for ev in events:
        seen.add((ev.event_key, ev.instance))
        rows.append(
            _casebook_row(proto, ev.event_key, ev.instance, ev, by_event[ev.id], queries, plang)
        )
    # visits that exist in the schedule but have no event row yet (unscheduled, end of study)
    for spec in proto.schedule:
        started = subject.status in ("enrolled", "completed", "withdrawn", "lost_to_follow_up")
        if spec.kind in ("unscheduled", "end") and (spec.key, 1) not in seen and started:
            rows.append(_casebook_row(proto, spec.key, 1, None, [], queries, plang))
    order = {spec.key: i for i, spec in enumerate(proto.schedule)}
    rows.sort(key=lambda r: (order.get(r["event"], len(order)), r["instance"]))
    form_keys = []
    for spec in proto.schedule:
        for f in spec.forms:
            if f not in form_keys:
                form_keys.append(f)
    return {
        "subject_id": subject.study_id,
        "forms": [{"key": k, "title": proto.form(k).title.get(plang)} for k in form_keys],
        "rows": rows,
        "open_queries": sum(queries.values()),
    }


def _casebook_row(
    proto: Protocol,
    event_key: str,
    instance: int,
    ev: Event | None,
    recs: list[FormRecord],
    queries: dict[int, int],
    plang: str,
) -> dict[str, Any]:
    spec = proto.event(event_key)
    cells = {}
    for form_key in spec.forms:
        form = proto.form(form_key)
        mine = sorted((r for r in recs if r.form_key == form_key), key=lambda r: r.instance)
        cells[form_key] = {
            "form": form_key,
            "repeating": form.repeating,
            "records": [
                {
                    "id": r.id,
                    "instance": r.instance,
                    "status": r.status,
                    "version": r.version,
                    "open_queries": queries.get(r.id, 0),
                }
                for r in mine
            ],
            "status": _cell_status(mine, queries),
        }
    return {
        "event": event_key,
        "label": spec.label.get(plang) + (f" #{instance}" if spec.repeat else ""),
        "instance": instance,
        "kind": spec.kind,
        "scheduled_on": ev.scheduled_on.isoformat() if ev and ev.scheduled_on else None,
        "window": (
            [ev.window_start.isoformat(), ev.window_end.isoformat()]
            if ev and ev.window_start and ev.window_end
            else None
        ),
        "occurred_on": ev.occurred_on.isoformat() if ev and ev.occurred_on else None,
        "cells": cells,
    }


_STATUS_ORDER = ["incomplete", "complete", "verified", "signed", "locked"]


def _cell_status(recs: list[FormRecord], queries: dict[int, int]) -> str:
    if not recs:
        return "empty"
    if any(queries.get(r.id) for r in recs):
        return "query"
    return min((r.status for r in recs), key=_STATUS_ORDER.index)


# --- form entry -----------------------------------------------------------------------------


def field_spec(field: FieldDef, lang: str) -> dict[str, Any]:
    """Return one field described for the entry page, its branching as a JSON syntax tree."""
    spec = field_overview(field, protocol_text_lang(lang))
    spec["show_if_ast"] = parse(field.show_if).to_json() if field.show_if else None
    spec["calc_ast"] = parse(field.calc).to_json() if field.calc else None
    return spec


def masked(form: FormDef, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` with fields flagged as direct identifiers masked."""
    secret = {f.key for f in form.fields if f.identifier}
    return {k: (MASK if k in secret else v) for k, v in data.items()}


def record_dict(db: Session, record: FormRecord, lang: str = "en") -> dict[str, Any]:
    """Return a form record with its queries and signatures (identifier fields masked)."""
    qs = db.scalars(
        select(DataQuery).where(DataQuery.form_record_id == record.id).order_by(DataQuery.id)
    )
    sigs = db.scalars(
        select(Signature).where(Signature.form_record_id == record.id).order_by(Signature.id)
    )
    out = _record_json(
        records.subject_protocol(record.subject).form(record.form_key),
        record,
        record.subject.study_id,
        (record.event.event_key, record.event.instance),
    )
    out["queries"] = [query_dict(q) for q in qs]
    out["signatures"] = [signature_dict(s) for s in sigs]
    return out


def saved_form_dict(
    db: Session, saved: forms.SavedForm, subject: records.SubjectFacts, lang: str = "en"
) -> dict[str, Any]:
    """Return what :func:`record_dict` returns for a record :func:`forms.write_form` just stored.

    A new record has neither queries nor signatures and is built from what was written, with
    nothing read back; a changed one is read as usual.
    """
    if not saved.created:
        return record_dict(db, db.get_one(FormRecord, saved.id), lang)
    return created_form_dict(saved, subject)


def created_form_dict(saved: forms.SavedForm, subject: records.SubjectFacts) -> dict[str, Any]:
    """Return what :func:`record_dict` returns for a record just created (nothing is read)."""
    form = subject.protocol.form(saved.form_key)
    out = _record_json(form, saved, subject.study_id, (saved.event_key, saved.event_instance))
    out["queries"] = []
    out["signatures"] = []
    return out


def _record_json(
    form: FormDef, record: FormRecord | forms.SavedForm, study_id: str, event: tuple[str, int]
) -> dict[str, Any]:
    return {
        "id": record.id,
        "subject": study_id,
        "event": event[0],
        "event_instance": event[1],
        "form": record.form_key,
        "instance": record.instance,
        "status": record.status,
        "version": record.version,
        "updated_at": record.updated_at.isoformat(),
        "data": masked(form, dict(record.data)),
    }


def query_dict(q: DataQuery, codes: dict[int, str] | None = None) -> dict[str, Any]:
    record = q.form_record
    out = {
        "id": q.id,
        "record_id": q.form_record_id,
        "subject": record.subject.study_id,
        "form": record.form_key,
        "event": record.event.event_key,
        "event_instance": record.event.instance,
        "field": q.field,
        "text": q.text,
        "status": q.status,
        "raised_by": q.raised_by,
        "raised_at": q.raised_at.isoformat(),
        "answer": q.answer,
        "answered_by": q.answered_by,
        "closed_by": q.closed_by,
    }
    if codes is not None:
        out["site"] = codes.get(record.subject.site_id)
    return out


def signature_dict(s: Signature) -> dict[str, Any]:
    return {
        "id": s.id,
        "signer": s.signer,
        "meaning": s.meaning,
        "record_version": s.record_version,
        "signed_at": s.signed_at.isoformat(),
        "voided_at": s.voided_at.isoformat() if s.voided_at else None,
        "void_reason": s.void_reason,
    }


def form_entry(
    db: Session,
    subject: Subject,
    *,
    event_key: str,
    event_instance: int,
    form_key: str,
    instance: int | None,
    lang: str,
) -> dict[str, Any]:
    """Return what the entry page of one form needs: fields, stored record, queries, signatures."""
    proto = records.subject_protocol(subject)
    plang = protocol_text_lang(lang)
    form = proto.form(form_key)
    spec = proto.event(event_key)
    record = None
    ev = db.scalar(
        select(Event).where(
            Event.subject_id == subject.id,
            Event.event_key == event_key,
            Event.instance == event_instance,
        )
    )
    if ev is not None and (instance is not None or not form.repeating):
        record = db.scalar(
            select(FormRecord).where(
                FormRecord.event_id == ev.id,
                FormRecord.form_key == form_key,
                FormRecord.instance == (instance or 1),
            )
        )
    context = forms.validation_context(db, subject, None)
    return {
        "subject": subject.study_id,
        "event": event_key,
        "event_label": spec.label.get(plang) + (f" #{event_instance}" if spec.repeat else ""),
        "event_instance": event_instance,
        "form": form_key,
        "title": form.title.get(plang),
        "description": form.description.get(plang) if form.description else None,
        "repeating": form.repeating,
        "instance": record.instance if record else instance,
        "fields": [field_spec(f, lang) for f in form.fields],
        "context": context,
        "record": record_dict(db, record, lang) if record else None,
    }


# --- queries and audit ----------------------------------------------------------------------


def query_list(
    principal: Principal,
    *,
    status: str | None = None,
    site_id: int | None = None,
    raised_by: str | None = None,
    subject: str | None = None,
) -> Any:
    """Return the SELECT of queries at the user's sites, filtered as asked."""
    stmt = (
        select(DataQuery)
        .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
        .join(Subject, Subject.id == FormRecord.subject_id)
        .where(Subject.site_id.in_(principal.sites("view")))
        .order_by(DataQuery.id)
    )
    if status == "open":
        stmt = stmt.where(DataQuery.status != "closed")
    elif status:
        stmt = stmt.where(DataQuery.status == status)
    if site_id is not None:
        stmt = stmt.where(Subject.site_id == site_id)
    if raised_by:
        stmt = stmt.where(or_(DataQuery.raised_by == raised_by, DataQuery.answered_by == raised_by))
    if subject:
        stmt = stmt.where(Subject.study_id == subject)
    return stmt


def audit_query(
    principal: Principal,
    *,
    subject: str | None = None,
    record_id: int | None = None,
    field: str | None = None,
) -> Any:
    """Return the SELECT of audit entries about data at the user's sites, filtered as asked."""
    visible: ColumnElement[bool] = AuditEntry.site_id.in_(principal.sites("audit"))
    if principal.can("admin"):
        # sign-ins, accounts and protocols belong to no site: administrators see them too
        visible = or_(visible, AuditEntry.site_id.is_(None))
    stmt = select(AuditEntry).where(visible).order_by(AuditEntry.id)
    if subject:
        stmt = stmt.where(AuditEntry.subject_study_id == subject)
    if record_id is not None:
        stmt = stmt.where(
            AuditEntry.entity_type == "form_record", AuditEntry.entity_id == str(record_id)
        )
    return stmt


def audit_dict(entry: AuditEntry, codes: dict[int, str] | None = None) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.occurred_at.isoformat(timespec="seconds"),
        "actor": entry.actor,
        "action": entry.action,
        "entity": f"{entry.entity_type}:{entry.entity_id}",
        "subject": entry.subject_study_id,
        "site": (codes or {}).get(entry.site_id or 0),
        "before": entry.before,
        "after": entry.after,
        "reason": entry.reason,
    }


def audit_field_changes(entry: AuditEntry, field: str | None) -> list[tuple[str, Any, Any]]:
    """Return (field, before, after) for each value an entry changed (only ``field`` if given)."""
    before = entry.before or {}
    after = entry.after or {}
    keys = sorted(set(before) | set(after))
    if field:
        keys = [k for k in keys if k == field]
    return [(k, before.get(k), after.get(k)) for k in keys]
