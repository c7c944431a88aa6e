"""Fixtures for the procedure tests: a study with the built-in protocols, a site, an
investigator and a coordinator, and helpers that build valid form answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ductal import accounts, forms, records
from ductal.db import session_scope
from ductal.models import Subject
from ductal.protocols.loader import builtin_protocols

TODAY = dt.date(2026, 3, 31)
ENROLLED = dt.date(2026, 1, 26)
FIRST = dt.date(2026, 1, 29)


@pytest.fixture
def study(engine: Engine) -> Engine:
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(
            session,
            code="RIV",
            name="Riverside Breast Clinic",
            actor="setup",
            contact_phone="+44 20 7946 0000",
        )
        for username, role in (("dr_inv", "investigator"), ("coord", "coordinator")):
            user = accounts.create_user(
                session, username=username, full_name=username, actor="setup"
            )
            accounts.grant(session, user=user, site=site, role=role, actor="setup")
    return engine


def screening(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "screening_date": "2026-01-20",
        "age": 34,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2026-01-20",
    }
    data.update(overrides)
    return data


def enrolled(
    session: Session, *, infection: int = 0, culture: str = "negative", study_id: str | None = None
) -> Subject:
    subject = records.screen(
        session,
        protocol_id="lavage-observational",
        site=accounts.get_site(session, "RIV"),
        screening=screening(),
        actor="coord",
        study_id=study_id,
        today=TODAY,
    )
    records.enrol(session, subject=subject, actor="coord", enrolled_on=ENROLLED)
    forms.save_form(
        session,
        subject=subject,
        form_key="baseline",
        data={
            "assessment_date": "2026-01-26",
            "side": "left",
            "culture": culture,
            "infection_evidence": infection,
            **({"organism": "corynebacterium"} if culture == "positive" else {}),
        },
        actor="coord",
        today=TODAY,
    )
    return subject


def checks(day: dt.date = FIRST, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "check_date": day.isoformat(),
        "discharge_present": 0,
        "carcinoma_excluded": 1,
        "anticoagulant": 0,
        "antiplatelet": 0,
        "sedation_planned": 0,
        "irrigation_allergy": ["none"],
        "nipple_retracted": 0,
        "local_anaesthesia_planned": 1,
    }
    data.update(overrides)
    return data


def at(day: dt.date, hhmm: str) -> str:
    return f"{day.isoformat()}T{hhmm}:00Z"


def procedure(day: dt.date = FIRST, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "procedure_date": day.isoformat(),
        "operator": "dr_inv",
        "side": "left",
        "start_time": at(day, "09:00"),
        "end_time": at(day, "09:10"),
        "ducts_identified": 2,
        "ducts_cannulated": 1,
        "duct_positions": ["3"],
        "scope_diameter_mm": 0.55,
        "magnification": 40,
        "step_cleanse_at": at(day, "09:00"),
        "step_massage_at": at(day, "09:01"),
        "step_scope_at": at(day, "09:02"),
        "step_prime_at": at(day, "09:03"),
        "step_dilate_at": at(day, "09:04"),
        "dilator_first_mm": 0.4,
        "dilator_last_mm": 0.8,
        "step_introduce_at": at(day, "09:05"),
        "step_distend_at": at(day, "09:06"),
        "step_advance_at": at(day, "09:07"),
        "anaesthesia": ["topical", "intraductal"],
        "irrigation_volume_ml": 10,
        "lidocaine_percent": 0.5,
        "steroid_agent": "dexamethasone",
        "steroid_dose_mg": 5,
        "antibiotic_added": 0,
        "finding": "inflammation",
        "inflammation_features": ["flocculent", "hyperaemic"],
        "finding_clock": "3",
        "finding_depth_mm": 15,
        "biopsy_taken": 0,
        "cytology_taken": 0,
        "pain_score": 2,
        "complications": ["none"],
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}
