"""Fixtures of the web tests: an app on a fresh database with one user per role at site RIV."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from ductal import accounts, records
from ductal.config import load_settings
from ductal.db import session_scope
from ductal.models import ROLES
from ductal.protocols.loader import builtin_protocol
from ductal.signatures import hash_password
from ductal.web.app import WebOptions, create_app
from ductal.web.auth import AuthPolicy, create_token

PASSWORD = "correct horse battery"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast tests, same format


@dataclass
class World:
    app: FastAPI
    engine: Engine
    tokens: dict[str, str]


def build_world(engine: Engine, data_dir: Path, *, database_url: str) -> World:
    """Register two protocols, two sites, a user per role at RIV and one coordinator at HIL."""
    tokens: dict[str, str] = {}
    with session_scope(engine) as s:
        for pid in ("lavage-observational", "lavage-vs-steroid-ni"):
            records.register_protocol(s, protocol=builtin_protocol(pid), actor="setup")
        riv = accounts.create_site(s, code="RIV", name="Riverside (test)", actor="setup")
        hil = accounts.create_site(s, code="HIL", name="Hillside (test)", actor="setup")
        for role in ROLES:
            user = accounts.create_user(
                s,
                username=role,
                full_name=f"Test {role}",
                actor="setup",
                password_hash=hash_password(PASSWORD, hasher=CHEAP),
            )
            accounts.grant(s, user=user, site=riv, role=role, actor="setup")
            tokens[role] = create_token(s, user=user, name="tests", actor="setup")
        other = accounts.create_user(
            s,
            username="hil_coordinator",
            full_name="Hillside coordinator",
            actor="setup",
            password_hash=hash_password(PASSWORD, hasher=CHEAP),
        )
        accounts.grant(s, user=other, site=hil, role="coordinator", actor="setup")
        tokens["hil_coordinator"] = create_token(s, user=other, name="tests", actor="setup")
    settings = load_settings(
        {"DUCTAL_DATA_DIR": str(data_dir), "DUCTAL_DATABASE_URL": database_url}
    )
    app = create_app(
        settings,
        engine=engine,
        options=WebOptions(policy=AuthPolicy(max_failures_per_user=3), max_body_bytes=64_000),
    )
    return World(app=app, engine=engine, tokens=tokens)


@pytest.fixture
def world(engine: Engine, tmp_path: Path, database_url: str) -> Iterator[World]:
    built = build_world(engine, tmp_path / "data", database_url=database_url)
    yield built
    built.app.state.ductal.close()  # before the test database is dropped


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app, raise_server_exceptions=False) as c:
        yield c


def bearer(world: World, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.tokens[user]}"}


CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the login page and return the session's CSRF token."""
    page = client.get("/login", headers={"accept": "text/html"})
    token = CSRF.search(page.text)
    assert token is not None
    r = client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        headers={"accept": "text/html"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:500]
    account = client.get("/account", headers={"accept": "text/html"})
    found = CSRF.search(account.text)
    assert found is not None
    return found.group(1)


ELIGIBLE = {
    "screening_date": "2024-03-01",
    "age": 34,
    "sex": "female",
    "non_lactating_6m": 1,
    "pathology_confirmed": 1,
    "diagnosis": "igm",
    "carcinoma_excluded": 1,
    "consent_signed": 1,
    "consent_date": "2024-03-01",
}
BASELINE = {
    "assessment_date": "2024-03-02",
    "side": "left",
    "culture": "negative",
    "infection_evidence": 0,
    "height_cm": 162,
    "weight_kg": 58,
}

ADVERSE_EVENT = {
    "term": "pain",
    "onset_date": "2024-04-01",
    "ctcae_grade": 1,
    "serious": 0,
    "relatedness": "unrelated",
}


def enrolled(client: TestClient, headers: dict[str, str]) -> str:
    """Screen an eligible patient and enrol her through the API; return her study id."""
    screened = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": dict(ELIGIBLE)},
        headers=headers,
    )
    assert screened.status_code == 201, screened.text
    study_id: str = screened.json()["study_id"]
    enrolment = client.post(
        f"/api/v1/subjects/{study_id}/enrol", json={"enrolled_on": "2024-03-02"}, headers=headers
    )
    assert enrolment.status_code == 200, enrolment.text
    return study_id
