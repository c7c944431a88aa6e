"""The in-memory shape every exporter reads and every importer produces: subjects and their forms.

Reading the database once into :class:`SubjectData` keeps the writers (REDCap, ODM, FHIR,
statistical packages) free of SQL, lets the benchmarks feed them generated rows, and gives the
de-identifier one place to act. Direct identifiers (the encrypted ``Identity`` table) are never
read here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal.models import Event, FormRecord, Site, Subject

__all__ = ["FormData", "SubjectData", "collect_subjects", "iso"]


@dataclass
class FormData:
    """One form record: which event (and its instance), which form (and its instance), the data."""

    event: str
    form: str
    data: dict[str, Any]
    event_instance: int = 1
    instance: int = 1
    status: str = "complete"
    record_id: int | None = None
    version: int = 1


@dataclass
class SubjectData:
    """One subject with everything exported about it (never direct identifiers)."""

    study_id: str
    site: str
    status: str
    arm: str | None = None
    stratum: str | None = None
    status_reason: str | None = None
    screened_on: str | None = None
    enrolled_on: str | None = None
    forms: list[FormData] = field(default_factory=list)


def iso(day: dt.date | None) -> str | None:
    """Return ``day`` as ``YYYY-MM-DD`` (None stays None)."""
    return day.isoformat() if day is not None else None


def collect_subjects(
    session: Session,
    protocol_id: str,
    *,
    study_ids: Iterable[str] | None = None,
    batch: int = 500,
) -> Iterator[SubjectData]:
    """Yield the subjects of ``protocol_id`` with their form records, in study id order.

    Subjects are read in batches of ``batch`` so memory stays flat for large studies.
    """
    stmt = select(Subject).where(Subject.protocol_id == protocol_id).order_by(Subject.study_id)
    if study_ids is not None:
        stmt = stmt.where(Subject.study_id.in_(list(study_ids)))
    sites = {s.id: s.code for s in session.scalars(select(Site))}
    subjects = list(session.scalars(stmt))
    for start in range(0, len(subjects), batch):
        chunk = subjects[start : start + batch]
        by_id: dict[int, SubjectData] = {}
        for s in chunk:
            by_id[s.id] = SubjectData(
                study_id=s.study_id,
                site=sites.get(s.site_id, ""),
                status=s.status,
                arm=s.arm,
                stratum=s.stratum,
                status_reason=s.status_reason,
                screened_on=iso(s.screened_on),
                enrolled_on=iso(s.enrolled_on),
            )
        rows = session.execute(
            select(FormRecord, Event.event_key, Event.instance)
            .join(Event, FormRecord.event_id == Event.id)
            .where(FormRecord.subject_id.in_(list(by_id)))
            .order_by(FormRecord.subject_id, FormRecord.id)
        )
        for record, event_key, event_instance in rows:
            by_id[record.subject_id].forms.append(
                FormData(
                    event=event_key,
                    event_instance=event_instance,
                    form=record.form_key,
                    instance=record.instance,
                    status=record.status,
                    data=dict(record.data),
                    record_id=record.id,
                    version=record.version,
                )
            )
        yield from by_id.values()
