"""Fixtures: a study database with the built-in protocols, two sites, a small synthetic cohort."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import Engine

from ductal import accounts, records
from ductal.db import session_scope
from ductal.protocols.loader import builtin_protocols
from ductal.synthetic import generate_cohort
from ductal.vault import Vault

SYNTHETIC_NAME = "Zhang Xiu (synthetic)"


@pytest.fixture
def study(engine: Engine) -> Engine:
    """A database with the built-in protocols registered and sites RIV and HILL-2."""
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        accounts.create_site(session, code="HILL-2", name="Hillside", actor="setup")
    return engine


def add_cohort(
    engine: Engine, protocol_id: str, n: int, seed: int, vault: Vault | None = None
) -> None:
    """Write a synthetic cohort of ``n`` subjects through the records service."""
    with session_scope(engine) as session:
        sites = [accounts.get_site(session, "RIV"), accounts.get_site(session, "HILL-2")]
        generate_cohort(
            session,
            protocol_id=protocol_id,
            n_subjects=n,
            rng=np.random.default_rng(seed),
            sites=sites,
            vault=vault,
        )


@pytest.fixture
def cohort(study: Engine, vault: Vault) -> Engine:
    """The study database with 6 lavage-observational subjects whose identities are stored."""
    add_cohort(study, "lavage-observational", 6, seed=11, vault=vault)
    with session_scope(study) as session:
        subject = records.list_subjects(session, protocol_id="lavage-observational")[0]
        records.set_identity(
            session,
            subject=subject,
            identity={
                "name": SYNTHETIC_NAME,
                "hospital_record_number": "SYN7654321",
                "date_of_birth": "1985-04-03",
            },
            vault=vault,
            actor="setup",
            reason="test identity with a known name",
        )
    return study
