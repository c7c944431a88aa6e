"""The records service: screening, enrolment, scheduling, saving forms, conflicts and audit."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ductal import accounts, audit, forms, records
from ductal.db import session_scope
from ductal.errors import Conflict, NotFound, ValidationError
from ductal.models import AuditEntry, Event, FormRecord, Identity, Signature, Subject
from ductal.protocols.loader import builtin_protocols
from ductal.vault import Vault

TODAY = dt.date(2026, 11, 1)


def _screening(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "screening_date": "2017-03-01",
        "age": 31,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2017-03-01",
    }
    data.update(overrides)
    return data


def _follow_up(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "assessment_date": "2017-04-02",
        "mass": 1,
        "erythema": 0,
        "abscess": 0,
        "fistula": 0,
        "ulcer": 0,
        "skin_involvement": 0,
        "us_done": 1,
        "us_size_1_mm": 20.0,
        "us_size_2_mm": 12.0,
        "us_size_3_mm": 8.0,
        "investigator_response": "pr",
    }
    data.update(overrides)
    return data


def _save_follow_up(session: Session, subject: Subject, **kwargs: Any) -> FormRecord:
    """Save the month-1 follow-up (``data`` defaults to :func:`_follow_up`)."""
    kwargs.setdefault("data", _follow_up())
    kwargs.setdefault("actor", "coord")
    return forms.save_form(
        session,
        subject=subject,
        form_key="follow_up",
        event_key="month_1",
        today=TODAY,
        **kwargs,
    )


@pytest.fixture
def study(engine: Engine) -> Engine:
    """A database with the built-in protocols, one site and one user."""
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
    return engine


def _enrolled(session: Session, vault: Vault | None = None) -> Subject:
    site = accounts.get_site(session, "RIV")
    identity = {"name": "Test Person", "date_of_birth": "1986-01-15"} if vault else None
    subject = records.screen(
        session,
        protocol_id="lavage-observational",
        site=site,
        screening=_screening(),
        actor="coord",
        identity=identity,
        vault=vault,
        today=TODAY,
    )
    records.enrol(session, subject=subject, actor="coord", enrolled_on=dt.date(2017, 3, 2))
    return subject


def _count(session: Session, model: type[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_screen_assigns_study_id_and_judges_eligibility(study: Engine) -> None:
    with session_scope(study) as session:
        site = accounts.get_site(session, "RIV")
        ok = records.screen(
            session,
            protocol_id="lavage-observational",
            site=site,
            screening=_screening(),
            actor="coord",
            today=TODAY,
        )
        young = records.screen(
            session,
            protocol_id="lavage-observational",
            site=site,
            screening=_screening(age=17),
            actor="coord",
            today=TODAY,
        )
        assert ok.study_id == "LAV-0001" and ok.status == "consented"
        assert young.study_id == "LAV-0002" and young.status == "ineligible"
        assert young.status_reason


def test_enrolment_schedules_visits_with_windows(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        assert subject.status == "enrolled" and subject.arm == "lavage"
        events = records.subject_events(session, subject)
        month_3 = next(e for e in events if e.event_key == "month_3")
        assert month_3.scheduled_on == dt.date(2017, 3, 2) + dt.timedelta(days=90)
        assert month_3.window_start is not None and month_3.window_start < month_3.scheduled_on
        assert month_3.window_end is not None and month_3.window_end > month_3.scheduled_on


def test_ineligible_subject_cannot_be_enrolled(study: Engine) -> None:
    with session_scope(study) as session:
        site = accounts.get_site(session, "RIV")
        subject = records.screen(
            session,
            protocol_id="lavage-observational",
            site=site,
            screening=_screening(carcinoma_excluded=0),
            actor="coord",
            today=TODAY,
        )
        with pytest.raises(Conflict, match="ineligible"):
            records.enrol(session, subject=subject, actor="coord")


def test_save_reports_every_problem_and_stores_nothing(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        study_id = subject.study_id
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        _save_follow_up(
            session,
            subject,
            data=_follow_up(us_size_1_mm=900, mass="maybe", colour="red"),
            actor="coord",
        )
    fields = {p.field for p in caught.value.problems}
    assert {"us_size_1_mm", "mass", "colour"} <= fields
    with session_scope(study) as session:
        assert _count(session, FormRecord) == 1  # only the screening form


def test_date_before_birth_is_refused(study: Engine, vault: Vault) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session, vault)
        with pytest.raises(ValidationError) as caught:
            _save_follow_up(
                session,
                subject,
                data=_follow_up(assessment_date="1980-01-01"),
                actor="coord",
                vault=vault,
            )
        assert [p.field for p in caught.value.problems] == ["assessment_date"]


def test_change_needs_version_and_reason_and_is_audited(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        record = _save_follow_up(
            session,
            subject,
            data=_follow_up(),
            actor="coord",
        )
        assert record.version == 1
        with pytest.raises(Conflict, match="version"):
            _save_follow_up(
                session,
                subject,
                data=_follow_up(us_size_1_mm=18.0),
                actor="coord",
            )
        with pytest.raises(ValidationError, match="reason"):
            _save_follow_up(
                session,
                subject,
                data=_follow_up(us_size_1_mm=18.0),
                actor="coord",
                expected_version=1,
            )
        updated = _save_follow_up(
            session,
            subject,
            data=_follow_up(us_size_1_mm=18.0),
            actor="inv",
            expected_version=1,
            reason="re-measured",
        )
        assert updated.version == 2 and updated.data["us_size_1_mm"] == 18.0
        last = audit.chain_head(session)
        assert last is not None and last.action == "update" and last.actor == "inv"
        assert last.before == {"us_size_1_mm": 20.0} and last.after == {"us_size_1_mm": 18.0}
        assert last.reason == "re-measured"
        with pytest.raises(Conflict, match="someone else"):
            _save_follow_up(
                session,
                subject,
                data=_follow_up(us_size_1_mm=17.0),
                actor="coord",
                expected_version=1,
                reason="stale",
            )
        assert audit.verify_chain(session).ok


def test_stale_version_from_another_session_is_a_conflict(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        _save_follow_up(
            session,
            subject,
            data=_follow_up(),
            actor="coord",
        )
        study_id = subject.study_id
    for size, outcome in ((19.0, "saved"), (18.0, "conflict")):
        try:
            with session_scope(study) as session:
                subject = records.get_subject(session, study_id)
                _save_follow_up(
                    session,
                    subject,
                    data=_follow_up(us_size_1_mm=size),
                    actor="coord",
                    expected_version=1,
                    reason="edit",
                )
            result = "saved"
        except Conflict:
            result = "conflict"
        assert result == outcome
    with session_scope(study) as session:
        stored = session.scalars(select(FormRecord).where(FormRecord.form_key == "follow_up")).one()
        assert stored.data["us_size_1_mm"] == 19.0 and stored.version == 2


def test_data_change_voids_signature(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        record = _save_follow_up(
            session,
            subject,
            data=_follow_up(),
            actor="coord",
        )
        session.add(
            Signature(
                form_record_id=record.id,
                signer="inv",
                meaning="approval",
                record_version=record.version,
            )
        )
        session.flush()
        _save_follow_up(
            session,
            subject,
            data=_follow_up(mass=0),
            actor="coord",
            expected_version=1,
            reason="fix",
        )
        signature = session.scalars(select(Signature)).one()
        assert signature.voided_at is not None
        assert (
            session.scalar(select(AuditEntry).where(AuditEntry.action == "void_signature"))
            is not None
        )


def test_identity_is_encrypted_and_audit_names_no_values(study: Engine, vault: Vault) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session, vault)
        row = session.scalars(select(Identity)).one()
        assert b"Test Person" not in row.ciphertext
        assert records.get_identity(session, subject=subject, vault=vault)["name"] == "Test Person"
        entry = session.scalar(select(AuditEntry).where(AuditEntry.entity_type == "identity"))
        assert entry is not None and "Test Person" not in str(entry.after)


def test_duplicate_study_id_is_refused(study: Engine) -> None:
    with session_scope(study) as session:
        site = accounts.get_site(session, "RIV")
        records.screen(
            session,
            protocol_id="lavage-observational",
            site=site,
            screening=_screening(),
            actor="c",
            study_id="X-1",
            today=TODAY,
        )
        with pytest.raises(Conflict, match="already in use"):
            records.screen(
                session,
                protocol_id="lavage-observational",
                site=site,
                screening=_screening(),
                actor="c",
                study_id="X-1",
                today=TODAY,
            )


def test_repeating_forms_get_new_instances(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        for term in ("pain", "nausea"):
            forms.save_form(
                session,
                subject=subject,
                form_key="adverse_event",
                event_key="unscheduled",
                data={
                    "term": term,
                    "onset_date": "2017-03-10",
                    "ctcae_grade": 1,
                    "serious": 0,
                    "relatedness": "possible",
                },
                actor="coord",
                today=TODAY,
            )
        instances = [r.instance for r in records.subject_records(session, subject, "adverse_event")]
        assert instances == [1, 2]


def test_first_lavage_session_marks_event_done(study: Engine) -> None:
    with session_scope(study) as session:
        subject = _enrolled(session)
        forms.save_form(
            session,
            subject=subject,
            form_key="lavage_session",
            event_key="lavage",
            data={"session_date": "2017-03-03", "session_number": 1, "procedure": "massage"},
            actor="nurse",
            today=TODAY,
        )
        assert forms.first_session_date(session, subject) == dt.date(2017, 3, 3)
        done = session.scalars(
            select(Event).where(Event.event_key == "lavage", Event.instance == 1)
        ).one()
        assert done.status == "done"


def test_unknown_subject_and_protocol(study: Engine) -> None:
    with session_scope(study) as session:
        with pytest.raises(NotFound):
            records.get_subject(session, "NOPE-1")
        site = accounts.get_site(session, "RIV")
        with pytest.raises(NotFound, match="not registered"):
            records.screen(session, protocol_id="nope", site=site, screening={}, actor="c")


def test_register_same_version_with_changed_definition_is_refused(study: Engine) -> None:
    protocol = builtin_protocols()[0]
    changed = protocol.model_copy(update={"target_enrolment": protocol.target_enrolment + 1})
    with session_scope(study) as session:
        assert records.register_protocol(session, protocol=protocol, actor="a")
        with pytest.raises(Conflict, match="new version"):
            records.register_protocol(session, protocol=changed, actor="a")
