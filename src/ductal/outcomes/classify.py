"""The classification service: derive every assessment's response and query disagreements.

When the investigator's own call differs from the response the protocol's rules derive, a data
query is opened on the ``investigator_response`` field of that record (through
:func:`ductal.queries.open_query`, so it is audited). Re-running opens nothing new while an
identical query is still open or answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import queries
from ductal.models import DataQuery, FormRecord
from ductal.outcomes.dataset import derive, records_of
from ductal.outcomes.extract import extract_study
from ductal.outcomes.response import Classification, disagreement_text

ACTOR = "outcomes"


@dataclass
class ClassificationSummary:
    """What :func:`classify_and_query` found and did."""

    protocol_id: str
    assessments: int = 0
    by_response: dict[str, int] = field(default_factory=dict)
    disagreements: int = 0
    queries_opened: int = 0
    queries_already_open: int = 0
    opened_on: list[str] = field(default_factory=list)


def classify_and_query(
    session: Session, *, protocol_id: str, actor: str = ACTOR
) -> ClassificationSummary:
    """Derive the response of every assessment of ``protocol_id`` and query disagreements."""
    data = derive(extract_study(session, protocol_id))
    criteria = data.protocol.response
    a = data.assessments
    summary = ClassificationSummary(protocol_id=protocol_id, assessments=len(a))
    if a.empty:
        return summary
    summary.by_response = {str(k): int(v) for k, v in a["derived_response"].value_counts().items()}
    differing = a[a["agrees"] == False]  # noqa: E712 - None means no investigator call
    summary.disagreements = len(differing)
    if differing.empty:
        return summary
    ids = [int(i) for i in differing["record_id"]]
    records = {r.id: r for r in session.scalars(select(FormRecord).where(FormRecord.id.in_(ids)))}
    existing = {
        (q.form_record_id, q.text)
        for q in session.scalars(
            select(DataQuery).where(
                DataQuery.form_record_id.in_(ids),
                DataQuery.field == criteria.investigator_field,
                DataQuery.status != "closed",
            )
        )
    }
    for row in records_of(differing):
        call = Classification(
            overall=row["derived_response"],
            rule=row["rule"],
            clinical=row["clinical_response"],
            radiological=row["radiological_response"],
            signs=int(row["clinical_signs"]),
            size_mm=float(row["lesion_size_mm"]),
            change=float(row["change_from_baseline"]),
        )
        text = disagreement_text(call, str(row["investigator_response"]))
        record_id = int(row["record_id"])
        if (record_id, text) in existing:
            summary.queries_already_open += 1
            continue
        queries.open_query(
            session,
            record=records[record_id],
            field=criteria.investigator_field,
            text=text,
            actor=actor,
            origin="derived",
        )
        existing.add((record_id, text))
        summary.queries_opened += 1
        summary.opened_on.append(f"{row['study_id']} {row['event_key']}")
    return summary
