"""Access control proof: the route × role × site matrix, identifiers, tokens, sessions, throttling.

The matrix is :mod:`tests.trust.access_matrix` (``python -m tests.trust.access_matrix`` prints it
for docs/validation.md); here every cell is asserted. Access rules do not depend on the database
kind, so this runs on SQLite only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update

from ductal.db import session_scope
from ductal.models import AuditEntry
from ductal.web.app import create_app
from ductal.web.auth import create_token
from ductal.web.store import ApiToken, LoginAttempt, WebSession
from tests.trust.access_matrix import (
    KNOWN_NAME,
    PARAM,
    PASSWORD,
    World,
    cells,
    login,
    markdown,
    routes_of,
    temporary_world,
)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with temporary_world() as w:
        yield w


@pytest.mark.slow
def test_every_cell_of_the_matrix(world: World) -> None:
    # run on a copy of the world's state: the calls change it (tokens revoked, records locked)
    found = list(cells(world))
    routes = routes_of(world.app)
    assert len(found) == sum(len(r.methods or ()) for r in routes) * 6 * 2
    wrong = [c for c in found if not c.ok]
    assert wrong == [], markdown(found)
    # the matrix is not trivially all-admit or all-refuse
    assert sum(c.outcome == "admit" for c in found) > 100
    assert sum(c.outcome == "refuse" and c.status == 404 for c in found) > 100


def _get_routes(world: World) -> list[str]:
    values = {**world.values, "token_id": 0}
    return [
        PARAM.sub(lambda m: str(values[m.group(1)]), r.path or "")
        for r in routes_of(world.app)
        if "GET" in (r.methods or ()) and "{path" not in (r.path or "")
    ]


@pytest.mark.parametrize(
    "role", ["statistician", "read_only", "monitor", "coordinator", "investigator", "admin"]
)
def test_identifiers_reach_no_one_but_admins(world: World, role: str) -> None:
    """Every GET route, API and page: the name and birth date reach admins (and the printed
    instruction sheet of an investigator at the subject's site), nobody else."""
    seen = []
    with TestClient(world.app, raise_server_exceptions=False) as client:
        login(client, f"{role}_own")
        token = {"Authorization": f"Bearer {world.tokens[f'{role}_own']}"}
        for path in _get_routes(world):
            api = path.startswith("/api/")
            r = client.get(path, headers=token if api else {"accept": "text/html"})
            if KNOWN_NAME in r.text or "1988-07-14" in r.text:
                seen.append(path)
            if role != "admin":  # asking for the name outright (printed sheets) changes nothing
                r = client.get(
                    path,
                    params={"with_name": "true", "format": "html"},
                    headers=token if api else {"accept": "text/html"},
                )
                if KNOWN_NAME in r.text or "1988-07-14" in r.text:
                    seen.append(f"{path}?with_name=true")
    sid = world.values["study_id"]
    if role == "admin":  # the positive control: the identity views do show it
        assert sorted(seen) == sorted(
            [f"/api/v1/subjects/{sid}/identity", f"/subjects/{sid}/identity"]
        )
    elif role == "investigator":  # may print the name on a patient's instruction sheet, audited
        assert seen and all(p.endswith("?with_name=true") and "instructions" in p for p in seen)
    else:
        assert seen == []


def _login_form(client: TestClient) -> str:
    page = client.get("/login", headers={"accept": "text/html"})
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


@pytest.fixture
def forget_attempts(world: World) -> Iterator[None]:
    """Clear the login attempts afterwards, so this address is not throttled in other tests."""
    yield
    with session_scope(world.engine) as s:
        s.execute(delete(LoginAttempt))


@pytest.mark.usefixtures("forget_attempts")
def test_brute_force_loop_is_throttled(world: World) -> None:
    app = create_app(world.app.state.ductal.settings, engine=world.engine)  # default policy
    with TestClient(app, raise_server_exceptions=False) as client:
        csrf = _login_form(client)
        with session_scope(world.engine) as s:
            before = s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "login_failed")
            )
        statuses = []
        for i in range(200):  # one user, guessing
            r = client.post(
                "/login",
                data={"username": "monitor_own", "password": f"guess {i}", "csrf_token": csrf},
                follow_redirects=False,
            )
            statuses.append(r.status_code)
        assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
        right = client.post(
            "/login",
            data={"username": "monitor_own", "password": PASSWORD, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert right.status_code == 429  # locked out for the window, even with the password
        spray = [
            client.post(
                "/login",
                data={"username": f"nobody{i}", "password": "Winter2026!", "csrf_token": csrf},
                follow_redirects=False,
            ).status_code
            for i in range(60)
        ]
        assert set(spray) == {429}  # 200 failures from this address: every user is throttled
        with session_scope(world.engine) as s:
            after = s.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "login_failed")
            )
        assert after - before == 200 + 1 + 60  # every refused attempt is audited
        other = client.post(
            "/login",
            data={"username": "read_only_own", "password": PASSWORD, "csrf_token": csrf},
            follow_redirects=False,
        )
        assert other.status_code == 429  # from this address, for now


def test_revoked_token_is_refused_at_once(world: World) -> None:
    with session_scope(world.engine) as s:
        user_id = s.scalar(select(ApiToken.user_id).where(ApiToken.id == 1))
        from ductal.models import User

        user = s.get(User, user_id)
        assert user is not None
        secret = create_token(s, user=user, name="to revoke", actor="test")
        s.flush()
        token_id = s.scalar(select(func.max(ApiToken.id)))
        username = user.username
    bearer = {"Authorization": f"Bearer {secret}"}
    with TestClient(world.app, raise_server_exceptions=False) as client:
        assert client.get("/api/v1/me", headers=bearer).status_code == 200
        csrf = login(client, username)
        r = client.post(
            f"/account/tokens/{token_id}/revoke",
            data={"csrf_token": csrf},
            headers={"accept": "text/html"},
            follow_redirects=False,
        )
        assert r.status_code in (200, 303)
    with TestClient(world.app, raise_server_exceptions=False) as fresh:
        r = fresh.get("/api/v1/me", headers=bearer)
        assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize("column", ["last_seen_at", "created_at"])
def test_sessions_expire_idle_and_absolute(world: World, column: str) -> None:
    policy = world.app.state.ductal.policy
    age = (
        dt.timedelta(minutes=policy.idle_minutes + 1)
        if column == "last_seen_at"
        else dt.timedelta(hours=policy.absolute_hours + 1)
    )
    with TestClient(world.app, raise_server_exceptions=False) as client:
        login(client, "coordinator_own")
        assert client.get("/api/v1/me").status_code == 200
        with session_scope(world.engine) as s:
            s.execute(
                update(WebSession)
                .where(WebSession.ended_at.is_(None))
                .values({column: dt.datetime.now(dt.UTC) - age})
            )
        r = client.get("/api/v1/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
