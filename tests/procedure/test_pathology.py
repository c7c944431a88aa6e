"""Pending pathology results: due dates, overdue lists, entering results, flags that block."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select

from ductal import queries, records
from ductal.db import session_scope
from ductal.errors import Conflict, NotFound, ValidationError
from ductal.models import AuditEntry
from ductal.procedure import checks as checks_service
from ductal.procedure import pathology
from ductal.procedure.record import save_procedure

from .conftest import FIRST, TODAY, checks, enrolled, procedure


def _sampled(engine: Engine, **samples: int) -> str:
    with session_scope(engine) as session:
        subject = enrolled(session)
        checks_service.record_checks(
            session, subject=subject, data=checks(), actor="coord", today=TODAY
        )
        save_procedure(
            session, subject=subject, data=procedure(**samples), actor="dr_inv", today=TODAY
        )
        return subject.study_id


def test_samples_create_pending_results_due_in_a_week(study: Engine) -> None:
    study_id = _sampled(study, biopsy_taken=1, cytology_taken=1)
    with session_scope(study) as session:
        due = FIRST + dt.timedelta(days=7)
        pending = pathology.pending_results(session, today=due)
        assert [(p.study_id, p.instance, p.sample_type, p.due, p.overdue) for p in pending] == [
            (study_id, 1, "biopsy", due, False),
            (study_id, 2, "cytology", due, False),
        ]
        assert pathology.overdue_results(session, today=due) == []
        late = pathology.overdue_results(session, today=due + dt.timedelta(days=3))
        assert [(p.instance, p.days_overdue) for p in late] == [(1, 3), (2, 3)]
        assert late[0].to_dict()["overdue"] is True


def _result(result: str, **extra: str) -> dict[str, str]:
    return {"result_date": "2026-02-04", "result": result, **extra}


def test_benign_result_closes_the_pending_one(study: Engine) -> None:
    study_id = _sampled(study, cytology_taken=1)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        outcome = pathology.enter_result(
            session,
            subject=subject,
            instance=1,
            data=_result("benign"),
            actor="coord",
            today=TODAY,
        )
        assert not outcome.flagged
        assert outcome.record.data["sample_type"] == "cytology"
        assert outcome.record.data["sample_date"] == FIRST.isoformat()
        assert pathology.pending_results(session, today=TODAY) == []
        done = pathology.pending_results(session, today=TODAY, include_done=True)
        assert [(p.status, p.overdue) for p in done] == [("done", False)]
        assert not pathology.is_flagged(session, subject)
        assert checks_service.checks_for_day(session, subject=subject, day=FIRST).may_start


@pytest.mark.parametrize("result", ["suspicious", "malignant"])
def test_worrying_result_flags_and_blocks_lavage(study: Engine, result: str) -> None:
    study_id = _sampled(study, biopsy_taken=1)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        outcome = pathology.enter_result(
            session,
            subject=subject,
            instance=1,
            data=_result(result),
            actor="coord",
            today=TODAY,
        )
        assert outcome.flagged
        (query,) = queries.open_queries(session, record=outcome.record)
        assert query.field == "result" and "excluded from lavage" in query.text
        flag = session.scalars(select(AuditEntry).where(AuditEntry.action == "flag")).one()
        assert flag.subject_study_id == study_id and flag.after["result"] == result
        next_day = FIRST + dt.timedelta(days=9)
        checks_service.record_checks(
            session, subject=subject, data=checks(next_day), actor="coord", today=TODAY
        )
        report = checks_service.checks_for_day(session, subject=subject, day=next_day)
        assert [f.key for f in report.open_blocks] == ["pathology_flagged"]
        with pytest.raises(Conflict, match="pathology_flagged"):
            save_procedure(
                session, subject=subject, data=procedure(next_day), actor="dr_inv", today=TODAY
            )


def test_bad_results_are_refused(study: Engine) -> None:
    study_id = _sampled(study, biopsy_taken=1)
    with session_scope(study) as session:
        subject = records.get_subject(session, study_id)
        with pytest.raises(NotFound):
            pathology.enter_result(
                session,
                subject=subject,
                instance=5,
                data=_result("benign"),
                actor="coord",
                today=TODAY,
            )
        with pytest.raises(ValidationError) as caught:
            pathology.enter_result(
                session,
                subject=subject,
                instance=1,
                data={"result_date": "2026-01-20", "result": "bad"},
                actor="coord",
                today=TODAY,
            )
        assert sorted(p.field for p in caught.value.problems) == ["result", "result_date"]
        with pytest.raises(ValidationError) as caught:
            pathology.enter_result(
                session,
                subject=subject,
                instance=1,
                data=_result("benign", result_date="2026-01-20"),
                actor="coord",
                today=TODAY,
            )
        assert [p.field for p in caught.value.problems] == ["result_date"]
        with pytest.raises(ValidationError):
            pathology.request_result(
                session, subject=subject, sample_type="swab", sample_date=FIRST, actor="coord"
            )
