"""A study database for the randomisation tests, with helpers to enrol subjects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ductal import accounts, records
from ductal.db import session_scope
from ductal.models import Subject
from ductal.protocols.loader import builtin_protocol
from ductal.protocols.model import Protocol, Randomisation

NI = "lavage-vs-steroid-ni"
ADAPTIVE = "refractory-igm-adaptive"
MINIMISED = "lavage-vs-steroid-min"
SMALL = "lavage-vs-steroid-small"


def variants() -> list[Protocol]:
    """Return the built-in protocols used here plus two variants of the non-inferiority trial."""
    ni = builtin_protocol(NI)
    minimised = ni.model_copy(
        update={
            "id": MINIMISED,
            "study_id_prefix": "NIM",
            "randomisation": Randomisation(method="minimisation", minimisation_probability=0.8),
        }
    )
    small = ni.model_copy(update={"id": SMALL, "study_id_prefix": "NIS", "target_enrolment": 4})
    return [ni, builtin_protocol(ADAPTIVE), minimised, small]


def set_up_study(engine: Engine) -> Engine:
    """Register the protocols and one site in ``engine``'s database; return the engine."""
    with session_scope(engine) as session:
        for protocol in variants():
            records.register_protocol(session, protocol=protocol, actor="setup")
        accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
    return engine


@pytest.fixture
def study(engine: Engine) -> Engine:
    """A database with the protocols registered and one site."""
    return set_up_study(engine)


def screening(protocol_id: str, severity: str = "mild") -> dict[str, Any]:
    data: dict[str, Any] = {
        "screening_date": "2019-01-07",
        "age": 33,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2019-01-07",
    }
    if protocol_id == ADAPTIVE:
        data["refractory_or_recurrent"] = 1
    else:
        data["severity_score"] = 8 if severity == "severe" else 3
        data["severity_group"] = severity
    return data


def enrolled(session: Session, protocol_id: str, severity: str = "mild") -> Subject:
    """Screen and enrol one eligible subject (not yet randomised)."""
    subject = records.screen(
        session,
        protocol_id=protocol_id,
        site=accounts.get_site(session, "RIV"),
        screening=screening(protocol_id, severity),
        actor="coordinator",
        today=dt.date(2026, 11, 1),
    )
    assert subject.status == "consented", subject.status_reason
    records.enrol(session, subject=subject, actor="coordinator", enrolled_on=dt.date(2019, 1, 8))
    return subject
