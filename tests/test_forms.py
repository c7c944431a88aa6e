"""Form saves at the SQL level: no ORM objects needed, loaded objects kept true, locks, races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session

from ductal import audit, forms, records
from ductal.db import session_scope
from ductal.errors import Conflict
from ductal.models import AuditEntry, Event, FormRecord
from tests.test_records import TODAY, _enrolled, _follow_up, _save_follow_up, study  # noqa: F401

ADVERSE_EVENT = {
    "term": "pain",
    "onset_date": "2017-03-10",
    "ctcae_grade": 1,
    "serious": 0,
    "relatedness": "possible",
}


def _write(
    session: Session,
    study_id: str,
    form_key: str = "adverse_event",
    event_key: str = "unscheduled",
    data: dict[str, Any] = ADVERSE_EVENT,
) -> forms.SavedForm:
    """Save a form the way the web API does: the subject's facts, then :func:`write_form`."""
    facts = records.subject_facts(session, study_id)
    assert facts is not None
    return forms.write_form(
        session, facts, form_key=form_key, event_key=event_key, data=data, actor="coord",
        today=TODAY,
    )  # fmt: skip


def test_write_form_makes_no_orm_objects(study: Engine) -> None:  # noqa: F811
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
    with session_scope(study) as session:
        facts = records.subject_facts(session, study_id)
        assert facts is not None and facts.identity is None  # read with the subject: none stored
        saved = forms.write_form(
            session, facts, form_key="follow_up", event_key="month_1", data=_follow_up(),
            actor="coord", today=TODAY,
        )  # fmt: skip
        assert len(session.identity_map) == 0
        stored = session.get_one(FormRecord, saved.id)
        assert (stored.version, stored.status, stored.instance) == (1, "complete", 1)
        assert stored.data == saved.data and stored.updated_at == saved.updated_at
        assert saved.created and saved.event_key == "month_1"


def test_a_loaded_record_reads_the_saved_change(study: Engine) -> None:  # noqa: F811
    with session_scope(study) as session:
        subject = _enrolled(session)
        record = _save_follow_up(session, subject)
        event = record.event
        assert record.version == 1 and event.occurred_on is not None
        _save_follow_up(
            session, subject, data=_follow_up(mass=0, assessment_date="2017-04-03"),
            expected_version=1, reason="typo",
        )  # fmt: skip
        # the same objects, changed underneath by Core statements, read their rows again
        assert record.version == 2 and record.data["mass"] == 0
        assert str(event.occurred_on) == "2017-04-03"  # the visit's date follows the form


def test_unchanged_save_changes_nothing(study: Engine) -> None:  # noqa: F811
    with session_scope(study) as session:
        subject = _enrolled(session)
        record = _save_follow_up(session, subject)
        entries = audit.verify_chain(session).entries
        again = _save_follow_up(session, subject, expected_version=1)
        assert again.id == record.id and again.version == 1
        assert audit.verify_chain(session).entries == entries


def test_concurrent_saves_for_one_subject_get_distinct_instances(study: Engine) -> None:  # noqa: F811
    """Eight writers add adverse events for one subject at once: each gets its own instance."""
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def writer() -> None:
        try:
            start.wait()
            for _ in range(5):
                with session_scope(study) as session:
                    _write(session, study_id)
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with session_scope(study) as session:
        instances = session.scalars(
            select(FormRecord.instance).where(FormRecord.form_key == "adverse_event")
        ).all()
        assert sorted(instances) == list(range(1, 41))
        assert audit.verify_chain(session).ok


_ADVISORY = text(
    "SELECT classid, objid, objsubid FROM pg_locks "
    "WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY objsubid"
)


def test_postgresql_locks_the_subject_then_the_chain(study: Engine) -> None:  # noqa: F811
    """A save locks its subject for the read and the chain for the audit entry; a transaction
    that already asked for the chain's lock takes no subject lock (one order, no deadlock)."""
    if study.dialect.name != "postgresql":
        pytest.skip("SQLite transactions begin IMMEDIATE: one writer, no locks to take")
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
    with session_scope(study) as session:
        saved = _write(session, study_id)
        held = session.execute(_ADVISORY).all()
        # two-key locks show objsubid 2
        subject_lock = (forms._PG_SUBJECT_LOCKS, saved.subject_id, 2)
        assert subject_lock in [tuple(r) for r in held]
        assert any(r.objsubid == 1 for r in held)  # the chain's (one bigint key)
    with session_scope(study) as session:
        audit.record(session, actor="t", action="note", entity_type="test", entity_id=1)
        _write(session, study_id)
        assert [r.objsubid for r in session.execute(_ADVISORY)] == [1]


def test_saving_a_saved_form_without_its_version_stores_nothing(study: Engine) -> None:  # noqa: F811
    """The record exists: the one-statement insert (PostgreSQL) stores nothing, no entry, no
    visit date, and the save is refused as a conflict, as on SQLite."""
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
        _write(session, study_id, "follow_up", "month_1", _follow_up())
    with session_scope(study) as session:
        before = audit.verify_chain(session)
    with pytest.raises(Conflict, match="already saved"), session_scope(study) as session:
        _write(session, study_id, "follow_up", "month_1", _follow_up(assessment_date="2017-05-01"))
    with session_scope(study) as session:
        after = audit.verify_chain(session)
        visit = session.scalars(select(Event).where(Event.event_key == "month_1")).one()
        assert session.scalar(select(func.count()).select_from(FormRecord)) == 2  # + screening
    assert after.ok and (after.entries, after.head) == (before.entries, before.head)
    assert str(visit.occurred_on) != "2017-05-01"


def test_a_new_visit_is_made_and_dated_with_the_form(study: Engine) -> None:  # noqa: F811
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
    saved = []
    for onset in ("2017-03-10", "2017-04-02"):
        with session_scope(study) as session:
            saved.append(_write(session, study_id, data={**ADVERSE_EVENT, "onset_date": onset}))
    first, second = saved
    assert (first.instance, second.instance) == (1, 2) and first.event_id == second.event_id
    with session_scope(study) as session:
        visit = session.get_one(Event, first.event_id)
        assert (visit.status, str(visit.occurred_on)) == ("done", "2017-04-02")
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.entity_type == "form_record")
        ).all()
        created = {e.entity_id: e.after for e in entries if e.action == "create"}
        assert audit.verify_chain(session).ok
    assert created[str(second.id)] == {
        "form": "adverse_event", "event": "unscheduled", "instance": 2,
        **ADVERSE_EVENT, "onset_date": "2017-04-02",
    }  # fmt: skip


# --- facts read by an earlier transaction (the web API keeps them between a script's saves) --


def _counts(session: Session) -> list[int]:
    return [
        session.scalar(select(func.count()).select_from(model)) or 0
        for model in (FormRecord, Event, AuditEntry)
    ]


def _unconfirmed(
    session: Session, study_id: str, condition: str = "true", **params: Any
) -> records.SubjectFacts:
    facts = records.subject_facts(session, study_id)
    assert facts is not None
    return replace(facts, unconfirmed=records.Confirmation(condition, params))


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def _write_ae(session: Session, facts: records.SubjectFacts, **options: Any) -> forms.SavedForm:
    return forms.write_form(
        session, facts, form_key=options.pop("form_key", "adverse_event"),
        event_key=options.pop("event_key", "unscheduled"),
        data=options.pop("data", ADVERSE_EVENT), actor="coord", today=TODAY, **options,
    )  # fmt: skip


def test_unconfirmed_facts_that_hold_are_confirmed_by_the_storing_statement(
    study: Engine,  # noqa: F811
) -> None:
    if study.dialect.name != "postgresql":
        pytest.skip("one statement confirms them on PostgreSQL only")
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
        facts = _unconfirmed(session, study_id, "CAST(:c_one AS integer) = 1", c_one=1)
    with _statements(study) as seen, session_scope(study) as session:
        saved = _write_ae(session, facts)
        held = [tuple(r) for r in session.execute(_ADVISORY)]
    assert len(seen) == 2 and "INSERT INTO form_records" in seen[0]  # and the lock query
    assert saved.created and saved.instance == 1
    assert (forms._PG_SUBJECT_LOCKS, facts.id, 2) in held  # taken by the statement
    with session_scope(study) as session:
        assert audit.verify_chain(session).ok


_CHANGES = {
    "status": "UPDATE subjects SET status = 'withdrawn'",
    "arm": "UPDATE subjects SET arm = 'steroid'",
    "enrolment": "UPDATE subjects SET enrolled_on = '2017-03-09'",
    "identity": "INSERT INTO identities (subject_id, ciphertext, updated_at)"
    " SELECT id, 'x', now() FROM subjects",
}


@pytest.mark.parametrize("change", [*_CHANGES, "condition"])
def test_unconfirmed_facts_no_longer_true_store_nothing(
    study: Engine,  # noqa: F811
    change: str,
) -> None:
    """The subject changed since its facts were read, or the caller's condition fails: the
    statement stores nothing — no record, no visit, no audit entry."""
    if study.dialect.name != "postgresql":
        pytest.skip("one statement confirms them on PostgreSQL only")
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
        facts = _unconfirmed(session, study_id, "false" if change == "condition" else "true")
        before = _counts(session)
    if change in _CHANGES:
        with study.begin() as conn:
            conn.execute(text(_CHANGES[change]))
    with pytest.raises(forms.Unconfirmed), session_scope(study) as session:
        _write_ae(session, facts)
    with session_scope(study) as session:
        assert _counts(session) == before
        assert audit.verify_chain(session).ok


@pytest.mark.parametrize("case", ["version", "treatment", "first_session_date", "unread"])
def test_a_save_one_statement_cannot_confirm_is_refused_before_any_statement(
    study: Engine,  # noqa: F811
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Changing a record, a treatment session (it may schedule the follow-up), a form whose
    rules read the first session's date, facts read without the identity — and anything on
    SQLite — need more than one statement: they are refused at once, nothing read or stored."""
    with session_scope(study) as session:
        study_id = _enrolled(session).study_id
        facts = _unconfirmed(session, study_id)
    options: dict[str, Any] = {}
    if case == "version":
        options = {"instance": 1, "expected_version": 1}
    elif case == "treatment":
        options = {"form_key": "lavage_session", "event_key": "lavage", "data": {}}
    elif case == "first_session_date":
        monkeypatch.setattr(forms, "_names_used", lambda _form: frozenset({"first_session_date"}))
    else:
        facts = replace(facts, identity=records.UNREAD)
    with _statements(study) as seen, session_scope(study) as session:
        with pytest.raises(forms.Unconfirmed):
            _write_ae(session, facts, **options)
        assert seen == []
