"""Irrigation regimen rules: antibiotic only with evidence of infection, steroid dose in range.

The rules are the protocol's ``settings.procedure.rules`` (rule language). They see the session
record's own answers on top of the subject's baseline answers (culture, purulent aspirate,
evidence of infection), plus the protocol's numbers: the corticosteroid range for the agent used
(``steroid_dose_min_mg`` / ``steroid_dose_max_mg``) and ``procedure_max_minutes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from ductal import queries, records
from ductal.models import FormRecord, Subject
from ductal.procedure.rules import Finding, evaluate, max_minutes, procedure_settings
from ductal.protocols.logic import is_blank
from ductal.protocols.model import Protocol

BASELINE_KEYS = ("culture", "purulent_aspirate", "infection_evidence")


def rule_env(
    protocol: Protocol,
    data: Mapping[str, Any],
    *,
    baseline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the values the regimen rules see for one session record."""
    settings = procedure_settings(protocol)
    env: dict[str, Any] = {k: (baseline or {}).get(k) for k in BASELINE_KEYS}
    env.update({k: v for k, v in data.items() if not is_blank(v)})
    limit = max_minutes(protocol)
    if limit is not None:
        env["procedure_max_minutes"] = limit
    dose = settings.steroid_dose_mg.get(str(env.get("steroid_agent")))
    if dose is not None:
        env["steroid_dose_min_mg"] = dose.min
        env["steroid_dose_max_mg"] = dose.max
    return env


def evaluate_regimen(
    protocol: Protocol,
    form_key: str,
    data: Mapping[str, Any],
    *,
    baseline: Mapping[str, Any] | None = None,
    lang: str = "en",
) -> list[Finding]:
    """Return the regimen rules that hold for a session record of ``form_key`` (pure)."""
    settings = procedure_settings(protocol)
    env = rule_env(protocol, data, baseline=baseline)
    form = protocol.form(form_key)
    return evaluate(settings.rules, form_key=form_key, env=env, lang=lang, form=form)


def baseline_data(session: Session, subject: Subject) -> dict[str, Any]:
    """Return the subject's baseline answers (empty when the baseline form is not saved)."""
    found = records.subject_records(session, subject, "baseline")
    return dict(found[-1].data) if found else {}


def check_record(
    session: Session, *, record: FormRecord, actor: str, lang: str = "en"
) -> list[Finding]:
    """Evaluate the regimen rules on a saved session record and raise their queries.

    A ``query`` finding opens a data query on its field unless the same question is already
    open on that record, so re-checking a record does not pile up duplicates.
    """
    subject = record.subject
    protocol = records.subject_protocol(subject)
    findings = evaluate_regimen(
        protocol,
        record.form_key,
        record.data,
        baseline=baseline_data(session, subject),
        lang=lang,
    )
    already = {(q.field, q.text) for q in queries.open_queries(session, record=record)}
    for finding in findings:
        if finding.level != "query" or finding.field is None:
            continue
        if (finding.field, finding.message) in already:
            continue
        queries.open_query(
            session,
            record=record,
            field=finding.field,
            text=finding.message,
            actor=actor,
            origin="rule",
        )
    return findings
