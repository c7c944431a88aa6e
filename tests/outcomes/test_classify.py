"""The classification service on a real database: queries on disagreement, once, audited."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from ductal import accounts, audit, forms, records
from ductal.db import session_scope
from ductal.models import AuditEntry, DataQuery, FormRecord
from ductal.outcomes.classify import classify_and_query
from ductal.outcomes.dataset import derive
from ductal.outcomes.extract import extract
from ductal.protocols.loader import builtin_protocols
from ductal.synthetic import generate_cohort

SCREENING = {
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


def _follow_up(date: str, call: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "assessment_date": date,
        "mass": 1,
        "erythema": 0,
        "abscess": 0,
        "fistula": 0,
        "ulcer": 0,
        "skin_involvement": 0,
        "us_done": 1,
        "us_size_1_mm": 15.0,
        "investigator_response": call,
    }
    data.update(overrides)
    return data


def _setup(engine: Engine) -> None:
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        subject = records.screen(
            session,
            protocol_id="lavage-observational",
            site=site,
            screening=SCREENING,
            actor="coord",
            today=dt.date(2026, 1, 1),
        )
        records.enrol(session, subject=subject, actor="coord", enrolled_on=dt.date(2017, 3, 2))
        forms.save_form(
            session,
            subject=subject,
            form_key="baseline",
            data={"assessment_date": "2017-03-02", "side": "left", "infection_evidence": 0,
                  "us_size_1_mm": 40.0, "presentation": ["mass"]},
            actor="coord",
        )  # fmt: skip
        # 15 of 40 mm with a mass left is PR by the rules; the investigator calls it SD
        forms.save_form(
            session,
            subject=subject,
            form_key="follow_up",
            data=_follow_up("2017-04-01", "sd"),
            event_key="month_1",
            actor="coord",
        )
        forms.save_form(
            session,
            subject=subject,
            form_key="follow_up",
            data=_follow_up("2017-05-01", "pr", us_size_1_mm=12.0),
            event_key="month_2",
            actor="coord",
        )


def test_disagreement_opens_one_query(engine: Engine) -> None:
    _setup(engine)
    with session_scope(engine) as session:
        first = classify_and_query(session, protocol_id="lavage-observational")
    assert (first.assessments, first.disagreements, first.queries_opened) == (2, 1, 1)
    assert first.by_response == {"PR": 2}
    with session_scope(engine) as session:
        again = classify_and_query(session, protocol_id="lavage-observational")
        (query,) = session.scalars(select(DataQuery)).all()
        assert (query.field, query.origin, query.raised_by) == (
            "investigator_response",
            "derived",
            "outcomes",
        )
        assert "derived by the protocol's rules: PR" in query.text
        assert "Investigator's response SD" in query.text
        opened = session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "open_query")
        )
        assert opened == 1
        assert audit.verify_chain(session).entries > 0
    assert (again.disagreements, again.queries_opened, again.queries_already_open) == (1, 0, 1)
    data = derive(extract(engine, "lavage-observational"))
    assert len(data.open_queries) == 1


def test_synthetic_cohort_derives_without_loss(engine: Engine) -> None:
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        summary = generate_cohort(
            session,
            protocol_id="lavage-vs-steroid-ni",
            n_subjects=12,
            rng=np.random.default_rng(7),
            sites=[site],
        )
    data = derive(extract(engine, "lavage-vs-steroid-ni"))
    assert len(data.subjects) == summary.enrolled
    assert len(data.screening) == summary.screened
    assert set(data.subjects["arm"]) <= {"lavage", "steroid"}
    # every follow-up record becomes one assessment row
    with session_scope(engine) as session:
        n_follow_up = session.scalar(
            select(func.count()).select_from(FormRecord).where(FormRecord.form_key == "follow_up")
        )
    assert len(data.assessments) == n_follow_up
