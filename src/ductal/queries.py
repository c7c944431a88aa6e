"""Data queries: a question on one field of a form record, open → answered → closed."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ductal import audit
from ductal.errors import Conflict, Problem, ValidationError
from ductal.models import DataQuery, FormRecord, utcnow
from ductal.records import subject_protocol


def _audit(
    session: Session,
    query: DataQuery,
    *,
    actor: str,
    action: str,
    before: dict[str, str | None] | None,
    after: dict[str, str | None],
) -> None:
    subject = query.form_record.subject
    audit.record(
        session,
        actor=actor,
        action=action,
        entity_type="query",
        entity_id=query.id,
        before=before,
        after=after,
        subject_study_id=subject.study_id,
        site_id=subject.site_id,
    )


def open_query(
    session: Session,
    *,
    record: FormRecord,
    field: str,
    text: str,
    actor: str,
    origin: str = "manual",
) -> DataQuery:
    """Raise a query on ``field`` of ``record`` and return it."""
    form = subject_protocol(record.subject).form(record.form_key)
    problems = []
    if field not in {f.key for f in form.fields}:
        problems.append(Problem("field", f"{field!r} is not a field of form {form.key}"))
    if not text.strip():
        problems.append(Problem("text", "is required"))
    if problems:
        raise ValidationError("cannot open the query", problems=problems)
    query = DataQuery(
        form_record_id=record.id, field=field, text=text.strip(), raised_by=actor, origin=origin
    )
    session.add(query)
    session.flush()
    query.form_record = record
    _audit(
        session,
        query,
        actor=actor,
        action="open_query",
        before=None,
        after={"field": field, "text": query.text, "origin": origin},
    )
    return query


def answer_query(session: Session, *, query: DataQuery, answer: str, actor: str) -> DataQuery:
    """Record the site's answer to an open query."""
    if query.status != "open":
        raise Conflict(f"query {query.id} is {query.status}; only an open query can be answered")
    if not answer.strip():
        raise ValidationError("an answer is required", problems=[Problem("answer", "is required")])
    query.status = "answered"
    query.answer = answer.strip()
    query.answered_by = actor
    query.answered_at = utcnow()
    session.flush()
    _audit(
        session,
        query,
        actor=actor,
        action="answer_query",
        before={"status": "open"},
        after={"status": "answered", "answer": query.answer},
    )
    return query


def close_query(
    session: Session, *, query: DataQuery, actor: str, note: str | None = None
) -> DataQuery:
    """Close an open or answered query."""
    if query.status == "closed":
        raise Conflict(f"query {query.id} is already closed")
    before = query.status
    query.status = "closed"
    query.closed_by = actor
    query.closed_at = utcnow()
    session.flush()
    _audit(
        session,
        query,
        actor=actor,
        action="close_query",
        before={"status": before},
        after={"status": "closed", "note": note},
    )
    return query


def open_queries(session: Session, *, record: FormRecord | None = None) -> list[DataQuery]:
    """Return queries not yet closed, optionally on one record."""
    stmt = select(DataQuery).where(DataQuery.status != "closed").order_by(DataQuery.id)
    if record is not None:
        stmt = stmt.where(DataQuery.form_record_id == record.id)
    return list(session.scalars(stmt))
