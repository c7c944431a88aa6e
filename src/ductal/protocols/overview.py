"""A protocol described in one language as plain data, for ``ductal protocols show`` and the web.

The overview is computed once and then rendered as text or JSON by the caller.
"""

from __future__ import annotations

from typing import Any

from ductal.protocols.model import FieldDef, FormDef, Protocol, ScheduledEvent

__all__ = ["field_overview", "protocol_overview", "protocol_summary"]


def protocol_summary(protocol: Protocol, lang: str = "en") -> dict[str, Any]:
    """Return the one-line facts of a protocol: id, version, design, arms, target and title."""
    return {
        "id": protocol.id,
        "version": protocol.version,
        "design": protocol.design,
        "arms": [arm.key for arm in protocol.arms],
        "target_enrolment": protocol.target_enrolment,
        "title": protocol.title.get(lang),
    }


def _range(field: FieldDef) -> str | None:
    if field.min is None and field.max is None:
        return None

    def text(value: float | None) -> str:
        if value is None:
            return ""
        return str(int(value)) if float(value).is_integer() else str(value)

    return f"{text(field.min)}–{text(field.max)}"


def field_overview(field: FieldDef, lang: str = "en") -> dict[str, Any]:
    """Return one field described in ``lang``."""
    return {
        "key": field.key,
        "type": field.type,
        "label": field.label.get(lang),
        "help": field.help.get(lang) if field.help else None,
        "unit": field.unit,
        "range": _range(field),
        "min": field.min,
        "max": field.max,
        "decimals": field.decimals,
        "max_length": field.max_length,
        "required": field.required,
        "identifier": field.identifier,
        "show_if": field.show_if,
        "calc": field.calc,
        "choices": [{"code": c.code, "label": c.label.get(lang)} for c in field.choices],
    }


def _form(form: FormDef, lang: str) -> dict[str, Any]:
    return {
        "key": form.key,
        "title": form.title.get(lang),
        "description": form.description.get(lang) if form.description else None,
        "repeating": form.repeating,
        "fields": [field_overview(f, lang) for f in form.fields],
        "rules": [
            {
                "key": r.key,
                "when": r.when,
                "expr": r.expr,
                "message": r.message.get(lang),
                "fields": list(r.fields),
            }
            for r in form.rules
        ],
    }


def _event(event: ScheduledEvent, lang: str) -> dict[str, Any]:
    return {
        "key": event.key,
        "label": event.label.get(lang),
        "kind": event.kind,
        "anchor": event.anchor,
        "day": event.day,
        "window_before": event.window_before,
        "window_after": event.window_after,
        "repeat": event.repeat.model_dump() if event.repeat else None,
        "arms": list(event.arms),
        "forms": list(event.forms),
    }


def protocol_overview(protocol: Protocol, lang: str = "en") -> dict[str, Any]:
    """Return the whole protocol with every label resolved to ``lang`` (English as fallback)."""
    p = protocol
    return {
        **protocol_summary(p, lang),
        "description": p.description.get(lang) if p.description else None,
        "registration": p.registration,
        "sponsor": p.sponsor,
        "study_id_prefix": p.study_id_prefix,
        "follow_up_days": p.follow_up_days,
        "sha256": p.sha256(),
        "arms": [
            {
                "key": a.key,
                "label": a.label.get(lang),
                "ratio": a.ratio,
                "description": a.description.get(lang) if a.description else None,
            }
            for a in p.arms
        ],
        "randomisation": p.randomisation.model_dump(),
        "strata": [s.model_dump() for s in p.strata],
        "screening_form": p.screening_form,
        "eligibility": [
            {"key": e.key, "kind": e.kind, "expr": e.expr, "message": e.message.get(lang)}
            for e in p.eligibility
        ],
        "schedule": [_event(e, lang) for e in p.schedule],
        "forms": [_form(f, lang) for f in p.forms],
        "response": p.response.model_dump(),
        "endpoints": [
            {**e.model_dump(exclude={"label"}), "label": e.label.get(lang)} for e in p.endpoints
        ],
        "benchmarks": [
            {**b.model_dump(exclude={"label"}), "label": b.label.get(lang)} for b in p.benchmarks
        ],
        "settings": dict(p.settings),
    }
