"""PostgreSQL: a new form record, its visit and its audit entry stored by one statement.

:func:`ductal.forms.write_form` uses this for a record that does not exist yet (the commonest
save: a new form, a new adverse event). One statement finds or creates the visit, takes the
next instance of a repeating form, inserts the record (or nothing, if that record exists
already: the caller then takes its general path), dates the visit from the form, and appends
the audit entry (:func:`ductal.audit.pg_append`), where the general path needs four. Each
statement is a round trip to the server and, on a busy web server, a hand-over of Python's
interpreter lock between threads, which cost more than the statements' own work.

The caller holds the subject's save lock (taken before this statement, so that the statement's
snapshot sees every save committed before it); the audit chain's lock is taken last.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy.orm import Session

from ductal import audit
from ductal.models import utcnow
from ductal.records import created_entry

_NEXT_INSTANCE = (
    "(SELECT COALESCE(MAX(r.instance), 0) + 1 FROM form_records AS r"
    " WHERE r.subject_id = given.subject_id AND r.event_id = ev.id"
    " AND r.form_key = given.form_key)"
)
_GIVEN_INSTANCE = "given.instance"


def _statement(instance_sql: str, append: audit.PgAppend) -> str:
    return f"""WITH given AS (
  SELECT CAST(:subject_id AS integer) AS subject_id, CAST(:event_key AS varchar) AS event_key,
    CAST(:event_instance AS integer) AS event_instance, CAST(:form_key AS varchar) AS form_key,
    CAST(:instance AS integer) AS instance, CAST(:data AS jsonb) AS data,
    CAST(:status AS varchar) AS status, CAST(:now AS timestamptz) AS now,
    CAST(:day AS date) AS day
), found AS (
  SELECT events.id FROM events, given
  WHERE events.subject_id = given.subject_id AND events.event_key = given.event_key
    AND events.instance = given.event_instance
), made AS (
  INSERT INTO events (subject_id, event_key, instance, status, occurred_on)
  SELECT subject_id, event_key, event_instance,
    CASE WHEN day IS NULL THEN 'scheduled' ELSE 'done' END, day
  FROM given WHERE NOT EXISTS (SELECT 1 FROM found)
  RETURNING id
), ev AS (
  SELECT id FROM found UNION ALL SELECT id FROM made
), rec AS (
  INSERT INTO form_records
    (subject_id, event_id, form_key, instance, data, status, version, created_at, updated_at)
  SELECT given.subject_id, ev.id, given.form_key, {instance_sql}, given.data, given.status, 1,
    given.now, given.now
  FROM given, ev
  ON CONFLICT (subject_id, event_id, form_key, instance) DO NOTHING
  RETURNING id, event_id, instance
), dated AS (
  UPDATE events SET occurred_on = given.day, status = 'done'
  FROM given
  WHERE events.id = (SELECT event_id FROM rec) AND given.day IS NOT NULL
    AND events.occurred_on IS DISTINCT FROM given.day
), {append.ctes}
SELECT rec.id, rec.event_id, rec.instance FROM rec, audit_added"""  # nosec B608


_SLOTS = {
    "entity": """'"' || rec.id || '"'""",
    "instance": "CAST(rec.instance AS text)",
}


def insert_form(
    session: Session,
    *,
    subject_id: int,
    study_id: str,
    site_id: int,
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
    """Store a new record; return its id, its visit's id, its instance and its time.

    ``instance`` None takes the next instance of a repeating form. ``day``, when given, dates
    the visit. Returns None, having stored nothing, when the record exists already.
    """
    now = utcnow()
    append = audit.pg_append(
        actor=actor,
        action="create",
        entity_type="form_record",
        entity_id=audit.Slot("entity"),
        after=created_entry(
            form_key, event_key, audit.Slot("instance") if instance is None else instance, data
        ),
        reason=reason,
        subject_study_id=study_id,
        site_id=site_id,
        slots=_SLOTS,
        source="rec",
    )
    params = {
        **append.params,
        "subject_id": subject_id,
        "event_key": event_key,
        "event_instance": event_instance,
        "form_key": form_key,
        "instance": instance,
        "data": json.dumps(data),
        "status": status,
        "now": now,
        "day": day,
    }
    sql = _statement(_NEXT_INSTANCE if instance is None else _GIVEN_INSTANCE, append)
    row = session.connection().execute(audit.sql_text(sql), params).first()
    if row is None:
        return None
    audit.note_chain_locked(session)
    return int(row.id), int(row.event_id), int(row.instance), now
