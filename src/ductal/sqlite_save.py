"""SQLite: a new form record on unconfirmed facts, stored by plain sqlite3 statements.

The SQLite counterpart of the confirming statement of :mod:`ductal.pg_save`, for the web API's
repeated form save (:attr:`ductal.records.SubjectFacts.unconfirmed`). SQLite has no
data-modifying common table expressions, so it is a short transaction of plain statements, in
the caller's transaction (which began ``IMMEDIATE``: no other writer runs until it ends): the
check that the facts and the caller's condition still hold, the visit with the highest instance
of the form so far, the visit if it is new, the record, the visit's date, and the audit entry,
whose digest Python computes as :func:`ductal.audit.record` does (a trigger moves the head row).

They run on the sqlite3 connection itself: through SQLAlchemy's execution layer each of these
statements costs several times its own work. Values are written as SQLAlchemy writes them —
times as UTC text to the microsecond, dates as ISO text, JSON as :func:`json.dumps` — which
``tests/test_sqlite_save.py`` checks against the ordinary path.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from sqlalchemy import Connection

from ductal import audit
from ductal.models import utcnow
from ductal.records import SubjectFacts, created_entry

# the token's and the subject's facts as the caller read them (``IS``: equal, NULL-safely)
_FACTS_HOLD = """SELECT EXISTS (SELECT 1 FROM subjects s
  LEFT JOIN identities i ON i.subject_id = s.id
  WHERE s.id = :subject_id AND s.study_id = :f_study AND s.site_id = :f_site
  AND s.status = :f_status AND s.arm IS :f_arm AND s.enrolled_on IS :f_enrolled
  AND s.protocol_version_id = :f_version AND i.ciphertext IS :f_identity) AND ({condition})"""
_EVENT = """SELECT e.id, e.occurred_on,
  (SELECT max(r.instance) FROM form_records r
   WHERE r.subject_id = e.subject_id AND r.event_id = e.id AND r.form_key = :form_key),
  (SELECT 1 FROM form_records r
   WHERE r.subject_id = e.subject_id AND r.event_id = e.id AND r.form_key = :form_key
   AND r.instance = :instance)
FROM events e
WHERE e.subject_id = :subject_id AND e.event_key = :event_key AND e.instance = :event_instance"""
_NEW_EVENT = """INSERT INTO events (subject_id, event_key, instance, status)
VALUES (:subject_id, :event_key, :event_instance, 'scheduled') RETURNING id"""
_RECORD = """INSERT INTO form_records
  (subject_id, event_id, form_key, instance, data, status, version, created_at, updated_at)
VALUES (:subject_id, :event_id, :form_key, :instance, :data, :status, 1, :now, :now)
RETURNING id"""
_DATED = "UPDATE events SET occurred_on = :day, status = 'done' WHERE id = :event_id"
_HEAD = "SELECT hash, occurred_at FROM audit_entries ORDER BY id DESC LIMIT 1"
_ENTRY = """INSERT INTO audit_entries (occurred_at, actor, action, entity_type, entity_id,
  subject_study_id, site_id, before, after, reason, prev_hash, hash)
VALUES (:occurred_at, :actor, :action, :entity_type, :entity_id, :subject_study_id, :site_id,
  :before, :after, :reason, :prev_hash, :hash)"""


def insert_form(
    conn: Connection,
    facts: SubjectFacts,
    *,
    event_key: str,
    event_instance: int,
    form_key: str,
    instance: int | None,
    data: dict[str, Any],
    status: str,
    day: dt.date | None,
    actor: str,
    reason: str | None,
) -> tuple[int, int, int, dt.datetime] | None:
    """Store a new record of subject ``facts`` (unconfirmed) in ``conn``'s transaction; return
    its id, its visit's id, its instance and its time.

    ``instance`` None takes the next instance of a repeating form. Returns None, having stored
    nothing, when the facts or their condition no longer hold, or the record exists already.
    """
    confirm = facts.unconfirmed
    if confirm is None:
        raise ValueError("insert_form takes facts read by an earlier transaction")
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):
        raise TypeError("insert_form runs on SQLite")
    checked = facts.confirmation_params()
    checked["f_enrolled"] = None if facts.enrolled_on is None else facts.enrolled_on.isoformat()
    if not raw.execute(_FACTS_HOLD.format(condition=confirm.sql), checked).fetchone()[0]:
        return None
    event = {
        "subject_id": facts.id,
        "event_key": event_key,
        "event_instance": event_instance,
        "form_key": form_key,
        "instance": instance or 1,
    }
    found = raw.execute(_EVENT, event).fetchone()
    if found is None:
        event_id, occurred, top = raw.execute(_NEW_EVENT, event).fetchone()[0], None, None
    elif instance is not None and found[3] is not None:
        return None  # the record exists: the ordinary way says what to do
    else:
        event_id, occurred, top = found[0], found[1], found[2]
    instance = instance if instance is not None else (top or 0) + 1
    now = utcnow()
    record = {
        "subject_id": facts.id,
        "event_id": event_id,
        "form_key": form_key,
        "instance": instance,
        "data": json.dumps(data),
        "status": status,
        "now": _stored_time(now),
    }
    record_id = int(raw.execute(_RECORD, record).fetchone()[0])
    if day is not None and occurred != day.isoformat():
        raw.execute(_DATED, {"day": day.isoformat(), "event_id": event_id})
    head = raw.execute(_HEAD).fetchone()
    entry = audit.next_entry(
        {
            "actor": actor,
            "action": "create",
            "entity_type": "form_record",
            "entity_id": str(record_id),
            "subject_study_id": facts.study_id,
            "site_id": facts.site_id,
            "before": None,
            "after": audit.json_safe(created_entry(form_key, event_key, instance, data)),
            "reason": reason,
        },
        None if head is None else (head[0], _read_time(head[1])),
    )
    values = audit.entry_values(entry)
    values["occurred_at"] = _stored_time(entry.occurred_at)
    for column in ("before", "after"):  # JSON columns: None too is stored as JSON ('null')
        values[column] = json.dumps(values[column])
    raw.execute(_ENTRY, values)
    return record_id, int(event_id), instance, now


def _stored_time(value: dt.datetime) -> str:
    """Return a time as SQLAlchemy stores a UTC time on SQLite."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _read_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
