"""A small synthetic study with a known synthetic name, on every configured database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine

from ductal import accounts, records
from ductal.db import session_scope
from ductal.protocols.loader import builtin_protocols
from ductal.synthetic import generate_cohort
from ductal.vault import Vault

# Synthetic, invented for the tests: it must never appear in clear text at rest.
KNOWN_NAME = "Zyxwvut Qponml"
KNOWN_RECORD_NUMBER = "HRN-77331-QZ"
KNOWN_PHONE = "+00 555 0147 2290"


@dataclass(frozen=True)
class Study:
    engine: Engine
    vault_key: str
    known_study_id: str

    @property
    def vault(self) -> Vault:
        return Vault(self.vault_key)


def screening(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "screening_date": "2020-03-01",
        "age": 31,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2020-03-01",
    }
    data.update(overrides)
    return data


def build_study(engine: Engine, vault_key: str, *, n_subjects: int = 4) -> Study:
    """Register the protocols, two sites, a seeded cohort and one subject with the known name."""
    vault = Vault(vault_key)
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        riv = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        hil = accounts.create_site(session, code="HIL", name="Hillside", actor="setup")
    with session_scope(engine) as session:
        generate_cohort(
            session,
            protocol_id="lavage-observational",
            n_subjects=n_subjects,
            rng=np.random.default_rng(np.random.SeedSequence(20261121)),
            sites=[riv, hil],
            vault=vault,
        )
    with session_scope(engine) as session:
        subject = records.screen(
            session,
            protocol_id="lavage-observational",
            site=accounts.get_site(session, "RIV"),
            screening=screening(),
            actor="coord",
            identity={
                "name": KNOWN_NAME,
                "hospital_record_number": KNOWN_RECORD_NUMBER,
                "phone": KNOWN_PHONE,
                "date_of_birth": "1988-07-14",
            },
            vault=vault,
            today=dt.date(2020, 3, 1),
        )
        records.enrol(session, subject=subject, actor="coord", enrolled_on=dt.date(2020, 3, 2))
        study_id = subject.study_id
    return Study(engine=engine, vault_key=vault_key, known_study_id=study_id)


@pytest.fixture
def study(engine: Engine) -> Study:
    return build_study(engine, Fernet.generate_key().decode())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``ductal ARGS`` in-process and return (exit code, stdout, stderr)."""
    from ductal.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
