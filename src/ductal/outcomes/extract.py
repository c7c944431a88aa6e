"""Read one protocol's study data out of the database in a handful of bulk queries.

This is the only module of :mod:`ductal.outcomes` that reads the database, and it only reads:
four queries (subjects, form records with their events, scheduled events, data queries) whatever
the number of subjects. Everything downstream works on the DataFrames it returns.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Text, select, type_coerce
from sqlalchemy.orm import Session

from ductal import records
from ductal.db import session_scope
from ductal.models import DataQuery, Event, FormRecord, ProtocolVersion, Site, Subject
from ductal.protocols.model import Protocol

SUBJECT_COLUMNS = [
    "subject_id",
    "study_id",
    "site",
    "arm",
    "stratum",
    "status",
    "status_reason",
    "screened_on",
    "enrolled_on",
]
RECORD_COLUMNS = [
    "record_id",
    "subject_id",
    "form_key",
    "instance",
    "record_status",
    "data",
    "event_key",
    "event_instance",
    "scheduled_on",
    "window_start",
    "window_end",
]
EVENT_COLUMNS = [
    "subject_id",
    "event_key",
    "event_instance",
    "scheduled_on",
    "window_start",
    "window_end",
    "occurred_on",
]
QUERY_COLUMNS = ["query_id", "record_id", "subject_id", "field", "status", "origin", "text"]


@dataclass(frozen=True)
class StudyExtract:
    """One protocol's data as DataFrames (see the ``*_COLUMNS`` lists for their columns)."""

    protocol: Protocol
    subjects: pd.DataFrame
    records: pd.DataFrame
    events: pd.DataFrame
    queries: pd.DataFrame
    extracted_at: dt.datetime

    @property
    def is_empty(self) -> bool:
        return self.subjects.empty


def registered_protocols(session: Session) -> list[str]:
    """Return the ids of the protocols registered in the database, in registration order."""
    ids = session.scalars(select(ProtocolVersion.protocol_id).order_by(ProtocolVersion.id))
    return list(dict.fromkeys(ids))


def extract_study(session: Session, protocol_id: str) -> StudyExtract:
    """Return every subject, form record, event and query of ``protocol_id`` (4 queries)."""
    protocol = records.protocol_of(records.latest_protocol_version(session, protocol_id))
    conn = session.connection()  # Core rows: no ORM loading overhead for 100,000s of records
    subject_rows = conn.execute(
        select(
            Subject.id,
            Subject.study_id,
            Site.code,
            Subject.arm,
            Subject.stratum,
            Subject.status,
            Subject.status_reason,
            Subject.screened_on,
            Subject.enrolled_on,
        )
        .join(Site, Site.id == Subject.site_id)
        .where(Subject.protocol_id == protocol_id)
        .order_by(Subject.id)
    ).all()
    record_rows = conn.execute(
        select(
            FormRecord.id,
            FormRecord.subject_id,
            FormRecord.form_key,
            FormRecord.instance,
            FormRecord.status,
            type_coerce(FormRecord.data, Text),
            Event.event_key,
            Event.instance,
            Event.scheduled_on,
            Event.window_start,
            Event.window_end,
        )
        .join(Event, Event.id == FormRecord.event_id)
        .join(Subject, Subject.id == FormRecord.subject_id)
        .where(Subject.protocol_id == protocol_id)
        .order_by(FormRecord.subject_id, FormRecord.id)
    ).all()
    event_rows = conn.execute(
        select(
            Event.subject_id,
            Event.event_key,
            Event.instance,
            Event.scheduled_on,
            Event.window_start,
            Event.window_end,
            Event.occurred_on,
        )
        .join(Subject, Subject.id == Event.subject_id)
        .where(Subject.protocol_id == protocol_id)
        .order_by(Event.subject_id, Event.id)
    ).all()
    query_rows = conn.execute(
        select(
            DataQuery.id,
            DataQuery.form_record_id,
            FormRecord.subject_id,
            DataQuery.field,
            DataQuery.status,
            DataQuery.origin,
            DataQuery.text,
        )
        .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
        .join(Subject, Subject.id == FormRecord.subject_id)
        .where(Subject.protocol_id == protocol_id)
        .order_by(DataQuery.id)
    ).all()
    return StudyExtract(
        protocol=protocol,
        subjects=pd.DataFrame([tuple(r) for r in subject_rows], columns=SUBJECT_COLUMNS),
        records=_records_frame(record_rows),
        events=pd.DataFrame([tuple(r) for r in event_rows], columns=EVENT_COLUMNS),
        queries=pd.DataFrame([tuple(r) for r in query_rows], columns=QUERY_COLUMNS),
        extracted_at=dt.datetime.now(dt.UTC),
    )


def _records_frame(rows: Sequence[Any]) -> pd.DataFrame:
    """Return the form records with their JSON decoded (SQLite gives text, PostgreSQL dicts)."""
    columns: list[list[Any]] = [list(c) for c in zip(*rows, strict=True)] if rows else []
    if not columns:
        return pd.DataFrame([], columns=RECORD_COLUMNS)
    loads = json.loads
    columns[5] = [loads(v) if isinstance(v, str) else v for v in columns[5]]
    frame = pd.DataFrame(dict(zip(RECORD_COLUMNS, columns, strict=True)))
    return frame


def extract(engine: Engine, protocol_id: str) -> StudyExtract:
    """Open a read-only transaction on ``engine`` and extract ``protocol_id``."""
    with session_scope(engine) as session:
        return extract_study(session, protocol_id)
