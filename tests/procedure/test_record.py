"""The procedure record service: checks before the start, the whole record validated at once,
nothing half-saved on bad input, queries, pending results, the course dated, images verified."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ductal import queries, records
from ductal.db import session_scope
from ductal.errors import Conflict, NotFound, PermissionDenied, ValidationError
from ductal.models import AuditEntry, Event, FormRecord
from ductal.procedure import checks as checks_service
from ductal.procedure.record import read_image, save_lavage_session, save_procedure, store_image

from .conftest import FIRST, TODAY, at, checks, enrolled, procedure


def _counts(engine: Engine) -> tuple[int, int, int]:
    with session_scope(engine) as session:
        return (
            session.scalar(select(func.count()).select_from(FormRecord)) or 0,
            session.scalar(select(func.count()).select_from(AuditEntry)) or 0,
            session.scalar(select(func.count()).select_from(Event)) or 0,
        )


def _ready(engine: Engine, **check_answers: Any) -> str:
    with session_scope(engine) as session:
        subject = enrolled(session)
        checks_service.record_checks(
            session, subject=subject, data=checks(**check_answers), actor="coord", today=TODAY
        )
        return subject.study_id


def test_full_procedure_is_saved(study: Engine) -> None:
    study_id = _ready(study)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        outcome = save_procedure(
            session, subject=subject, data=procedure(cytology_taken=1), actor="dr_inv", today=TODAY
        )
        assert outcome.record.status == "complete"
        assert outcome.record.data["duration_min"] == 10.0
        assert outcome.findings == []
        assert outcome.checks is not None and outcome.checks.may_start
        assert [(e.event_key, e.scheduled_on) for e in outcome.pending_results] == [
            ("pathology_result", FIRST + dt.timedelta(days=7))
        ]
        # the first session dates the course: 7 cycles every 2 days from 29 January
        assert outcome.course_dates[0] == (1, FIRST)
        assert outcome.course_dates[-1] == (7, dt.date(2026, 2, 10))
        lavage = [e for e in records.subject_events(session, subject) if e.event_key == "lavage"]
        assert outcome.record.event_id == lavage[0].id  # the first session is the first visit
        assert [(e.instance, e.scheduled_on, e.window_start, e.window_end) for e in lavage][:2] == [
            (1, FIRST, dt.date(2026, 1, 28), dt.date(2026, 1, 30)),
            (2, dt.date(2026, 1, 31), dt.date(2026, 1, 30), dt.date(2026, 2, 1)),
        ]
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions[-3:] == ["create", "request_pathology", "reschedule"]


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        pytest.param(
            {"step_dilate_at": at(FIRST, "09:02")}, ["step_dilate_at"], id="steps-out-of-order"
        ),
        pytest.param({"end_time": at(FIRST, "08:50")}, ["end_time"], id="end-before-start"),
        pytest.param({"dilator_last_mm": 2.5}, ["dilator_last_mm"], id="dilator-too-large"),
        pytest.param({"dilator_first_mm": 0.1}, ["dilator_first_mm"], id="dilator-too-small"),
        pytest.param({"scope_diameter_mm": 1.3}, ["scope_diameter_mm"], id="scope-too-wide"),
        pytest.param({"scope_diameter_mm": 0.2}, ["scope_diameter_mm"], id="scope-too-thin"),
        pytest.param({"magnification": 100}, ["magnification"], id="magnification"),
        pytest.param({"irrigation_volume_ml": None}, ["irrigation_volume_ml"], id="no-volume"),
        pytest.param({"step_advance_at": None}, ["step_advance_at"], id="required-step"),
        pytest.param(
            {"step_advance_at": at(FIRST, "09:30")}, ["step_advance_at"], id="step-after-end"
        ),
        pytest.param({"duct_positions": ["1", "2"]}, ["duct_positions"], id="more-positions"),
        pytest.param({"image_1": "sha256:abc"}, ["image_1"], id="bad-image-ref"),
        pytest.param(
            {"end_time": at(FIRST, "08:50"), "scope_diameter_mm": 3, "irrigation_volume_ml": None},
            ["end_time", "irrigation_volume_ml", "scope_diameter_mm"],
            id="all-problems-at-once",
        ),
    ],
)
def test_bad_input_is_refused_whole(
    study: Engine, overrides: dict[str, Any], fields: list[str]
) -> None:
    study_id = _ready(study)
    before = _counts(study)
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(
            session, subject=subject, data=procedure(**overrides), actor="dr_inv", today=TODAY
        )
    assert sorted({p.field for p in caught.value.problems}) == fields
    assert all(p.message for p in caught.value.problems)
    assert _counts(study) == before


def test_step_order_message_names_the_earlier_step(study: Engine) -> None:
    study_id = _ready(study)
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(
            session,
            subject=subject,
            data=procedure(step_dilate_at=at(FIRST, "09:02")),
            actor="dr_inv",
            today=TODAY,
        )
    (problem,) = caught.value.problems
    assert problem.message == (
        "at 09:02 is before the earlier step 'Cannula primed, air bubbles cleared' at 09:03: "
        "the steps follow the checklist order"
    )


def test_no_checks_no_start(study: Engine) -> None:
    with session_scope(study) as session:
        study_id = enrolled(session).study_id
    before = _counts(study)
    with pytest.raises(Conflict, match="no_checks"), session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(session, subject=subject, data=procedure(), actor="dr_inv", today=TODAY)
    assert _counts(study) == before


def test_blocking_check_needs_an_investigator_override(study: Engine) -> None:
    study_id = _ready(study, carcinoma_excluded=0)
    with pytest.raises(Conflict, match="carcinoma_not_excluded"), session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(session, subject=subject, data=procedure(), actor="dr_inv", today=TODAY)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        with pytest.raises(PermissionDenied):
            checks_service.override_check(
                session,
                subject=subject,
                day=FIRST,
                check="carcinoma_not_excluded",
                reason="MDT agreed",
                actor="coord",
            )
        with pytest.raises(ValidationError):
            checks_service.override_check(
                session,
                subject=subject,
                day=FIRST,
                check="carcinoma_not_excluded",
                reason="  ",
                actor="dr_inv",
            )
        with pytest.raises(ValidationError, match="nothing to override"):
            checks_service.override_check(
                session,
                subject=subject,
                day=FIRST,
                check="blood_thinner",
                reason="x",
                actor="dr_inv",
            )
        report = checks_service.override_check(
            session,
            subject=subject,
            day=FIRST,
            check="carcinoma_not_excluded",
            reason="Core biopsy benign; MDT agreed on 28 January",
            actor="dr_inv",
        )
        assert report.may_start
        assert report.overridden == {
            "carcinoma_not_excluded": "Core biopsy benign; MDT agreed on 28 January"
        }
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "override")).one()
        assert (entry.actor, entry.after) == (
            "dr_inv",
            {"check": "carcinoma_not_excluded", "day": "2026-01-29"},
        )
        with pytest.raises(Conflict, match="already overridden"):
            checks_service.override_check(
                session,
                subject=subject,
                day=FIRST,
                check="carcinoma_not_excluded",
                reason="again",
                actor="dr_inv",
            )
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        outcome = save_procedure(
            session, subject=subject, data=procedure(), actor="dr_inv", today=TODAY
        )
        assert outcome.checks is not None and outcome.checks.overridden


def test_regimen_query_is_raised_once(study: Engine) -> None:
    study_id = _ready(study)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        data = procedure(antibiotic_added=1, antibiotic_agent="gentamicin", steroid_dose_mg=15)
        outcome = save_procedure(session, subject=subject, data=data, actor="dr_inv", today=TODAY)
        assert {f.key for f in outcome.findings} == {
            "antibiotic_without_evidence",
            "steroid_dose_out_of_range",
        }
        open_ = queries.open_queries(session, record=outcome.record)
        assert sorted(q.field for q in open_) == ["antibiotic_added", "steroid_dose_mg"]
        record_id, version = outcome.record.id, outcome.record.version
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        edited = procedure(
            antibiotic_added=1, antibiotic_agent="gentamicin", steroid_dose_mg=15, pain_score=3
        )
        outcome = save_procedure(
            session,
            subject=subject,
            data=edited,
            actor="dr_inv",
            record_id=record_id,
            expected_version=version,
            reason="pain score corrected",
            today=TODAY,
        )
        assert len(queries.open_queries(session, record=outcome.record)) == 2
        assert outcome.pending_results == [] and outcome.course_dates == []


def test_edit_needs_a_real_record(study: Engine) -> None:
    study_id = _ready(study)
    with pytest.raises(NotFound), session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(
            session,
            subject=subject,
            data=procedure(),
            actor="dr_inv",
            record_id=9999,
            expected_version=1,
            reason="x",
            today=TODAY,
        )


def test_images_are_stored_by_checksum_and_verified(study: Engine, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    content = b"\x89PNG\r\n\x1a\n fake still image"
    ref = store_image(uploads, content)
    digest = hashlib.sha256(content).hexdigest()
    assert ref == f"sha256:{digest}" and (uploads / digest).read_bytes() == content
    assert store_image(uploads, content) == ref  # idempotent
    assert read_image(uploads, ref) == content
    study_id = _ready(study)
    missing = "sha256:" + "0" * 64
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        save_procedure(
            session,
            subject=subject,
            data=procedure(image_1=ref, image_2=missing),
            actor="dr_inv",
            uploads_dir=uploads,
            today=TODAY,
        )
    assert [p.field for p in caught.value.problems] == ["image_2"]
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        outcome = save_procedure(
            session,
            subject=subject,
            data=procedure(image_1=ref),
            actor="dr_inv",
            uploads_dir=uploads,
            today=TODAY,
        )
        assert outcome.record.data["image_1"] == ref
    (uploads / digest).write_bytes(b"tampered")
    with pytest.raises(ValidationError, match="checksum"):
        read_image(uploads, ref)
    with pytest.raises(ValidationError):
        store_image(uploads, b"")


def test_lavage_session_service(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session, culture="positive", infection=1)
        infusion = {
            "session_date": FIRST.isoformat(),
            "session_number": 1,
            "procedure": "infusion",
            "steroid_agent": "dexamethasone",
            "steroid_dose_mg": 5,
            "antibiotic_added": 0,
        }
        with pytest.raises(Conflict, match="no_checks"):
            save_lavage_session(
                session, subject=subject, data=infusion, actor="dr_inv", today=TODAY
            )
        checks_service.record_checks(
            session, subject=subject, data=checks(), actor="coord", today=TODAY
        )
        outcome = save_lavage_session(
            session, subject=subject, data=infusion, actor="dr_inv", today=TODAY
        )
        assert [f.key for f in outcome.findings] == ["antibiotic_expected"]
        assert outcome.course_dates[0] == (1, FIRST)
        massage = {
            "session_date": (FIRST + dt.timedelta(days=1)).isoformat(),
            "session_number": 2,
            "procedure": "massage",
        }
        # a massage starts nothing: no checks needed that day
        second = save_lavage_session(
            session, subject=subject, data=massage, actor="coord", today=TODAY
        )
        assert second.checks is None and second.findings == [] and second.course_dates == []
        assert second.record.event_id == outcome.record.event_id
        with pytest.raises(ValidationError):
            save_lavage_session(
                session,
                subject=subject,
                data={**massage, "session_number": 0},
                actor="coord",
                today=TODAY,
            )
