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

Given facts read by an earlier transaction (:attr:`ductal.records.SubjectFacts.unconfirmed`),
the statement takes the subject's lock itself, first, and stores nothing unless the subject
still has those facts and the caller's condition holds. Its snapshot then predates the lock, so
a save of the same subject committed meanwhile can make its new visit or instance collide: it
stores nothing then too (both inserts do nothing on conflict) and the caller starts again.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect

from ductal import audit
from ductal.models import utcnow
from ductal.records import SubjectFacts, created_entry

SUBJECT_LOCKS = 0x0D0C  # first key of the per-subject advisory locks (two-key space)

_NEXT_INSTANCE = (
    "(SELECT COALESCE(MAX(r.instance), 0) + 1 FROM form_records AS r"
    " WHERE r.subject_id = given.subject_id AND r.event_id = ev.id"
    " AND r.form_key = given.form_key)"
)
_GIVEN_INSTANCE = "given.instance"


# the subject's facts as the caller read them (each compared NULL-safely; the statement must
# stay under the 4 KiB up to which psycopg keeps its conversion of a statement: short names)
_FACTS_HOLD = """EXISTS (SELECT FROM subjects s LEFT JOIN identities i ON i.subject_id = s.id
  WHERE s.id = :subject_id AND s.study_id = :f_study AND s.site_id = :f_site
  AND s.status = :f_status AND s.arm IS NOT DISTINCT FROM :f_arm
  AND s.enrolled_on IS NOT DISTINCT FROM :f_enrolled AND s.protocol_version_id = :f_version
  AND i.ciphertext IS NOT DISTINCT FROM :f_identity)"""


def _statement(instance_sql: str, append: audit.PgAppend, confirm: str | None) -> str:
    where = (
        ""
        if confirm is None
        else f"""
  WHERE pg_advisory_xact_lock({SUBJECT_LOCKS}, :subject_id) IS NOT NULL AND {_FACTS_HOLD}
    AND ({confirm})"""
    )
    return f"""WITH given AS (
  SELECT CAST(:subject_id AS integer) AS subject_id, CAST(:event_key AS varchar) AS event_key,
    CAST(:event_instance AS integer) AS event_instance, CAST(:form_key AS varchar) AS form_key,
    CAST(:instance AS integer) AS instance, CAST(:data AS jsonb) AS data,
    CAST(:status AS varchar) AS status, CAST(:now AS timestamptz) AS now,
    CAST(:day AS date) AS day{where}
), found AS (
  SELECT events.id FROM events, given
  WHERE events.subject_id = given.subject_id AND events.event_key = given.event_key
    AND events.instance = given.event_instance
), made AS (
  INSERT INTO events (subject_id, event_key, instance, status, occurred_on)
  SELECT subject_id, event_key, event_instance,
    CASE WHEN day IS NULL THEN 'scheduled' ELSE 'done' END, day
  FROM given WHERE NOT EXISTS (SELECT 1 FROM found)
  ON CONFLICT (subject_id, event_key, instance) DO NOTHING
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


@dataclass(frozen=True)
class InsertStatement:
    """The one statement storing a new record: ductal's SQL text, its parameters, its time.

    Run, it yields one row ``(id, event_id, instance)`` when it stored the record, none when it
    stored nothing.
    """

    sql: str
    params: dict[str, Any]
    now: dt.datetime

    def psycopg(self) -> str:
        """Return the statement with psycopg's placeholders, for a caller running it itself."""
        return _psycopg_text(self.sql)


def insert_statement(
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
) -> InsertStatement:
    """Return the statement storing a new record of subject ``facts``.

    ``instance`` None takes the next instance of a repeating form. ``day``, when given, dates
    the visit. The statement stores nothing when the record exists already, or when
    unconfirmed facts (see above) no longer hold.
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
        subject_study_id=facts.study_id,
        site_id=facts.site_id,
        slots=_SLOTS,
        source="rec",
    )
    params = {
        **append.params,
        **({} if facts.unconfirmed is None else facts.confirmation_params()),
        "subject_id": facts.id,
        "event_key": event_key,
        "event_instance": event_instance,
        "form_key": form_key,
        "instance": instance,
        "data": json.dumps(data),
        "status": status,
        "now": now,
        "day": day,
    }
    confirm = facts.unconfirmed
    sql = _statement(
        _NEXT_INSTANCE if instance is None else _GIVEN_INSTANCE,
        append,
        None if confirm is None else confirm.sql,
    )
    return InsertStatement(sql, params, now)


@functools.lru_cache(maxsize=64)
def _psycopg_text(sql: str) -> str:
    # SQLAlchemy's compiler writes the placeholders (and doubles any literal %)
    return str(audit.sql_text(sql).compile(dialect=psycopg_dialect()))
