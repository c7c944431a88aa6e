"""Every route × every role, generated from the app's route table, and cross-site access.

A route's access rule is the permission carried by the dependency it uses; a route that declares
none fails here, so a new route cannot be added without deciding who may use it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route

from ductal.models import ROLES
from ductal.web.access import PERMISSIONS, PUBLIC
from tests.web.conftest import BASELINE, World, bearer, login
from tests.web.test_api import enrolled_subject, save
from tests.web.test_errors import assert_error_shape


def routes_of(app: FastAPI) -> list[RouteContext]:
    """Return every route of the app, those of included routers flattened, with full paths."""
    return list(iter_route_contexts(app.routes))


def is_api_route(ctx: RouteContext) -> bool:
    return isinstance(ctx.original_route, APIRoute)


def permission_of(route: RouteContext) -> str | None:
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        found = getattr(dep.call, "permission", None)
        if found is not None:
            return str(found)
        stack.extend(dep.dependencies)
    return None


def test_every_route_declares_access(world: World) -> None:
    routes = routes_of(world.app)
    missing = [
        f"{sorted(r.methods or [])} {r.path}"
        for r in routes
        if is_api_route(r) and permission_of(r) is None
    ]
    assert missing == []
    assert len([r for r in routes if is_api_route(r)]) >= 50
    others = [
        r.path
        for r in routes
        if not is_api_route(r)
        and not (isinstance(r.original_route, Mount) and r.path == "/static")
        and not (isinstance(r.original_route, Route) and r.path == "/api/v1/openapi.json")
    ]
    assert others == []  # only static files and the OpenAPI document are outside the rules


def _fixtures(client: TestClient, world: World) -> dict[str, Any]:
    sid = enrolled_subject(client, world)
    rec = save(client, world, sid, data=BASELINE).json()
    q = client.post(
        f"/api/v1/records/{rec['id']}/queries",
        json={"field": "side", "text": "check"},
        headers=bearer(world, "monitor"),
    ).json()
    return {
        "study_id": sid,
        "record_id": rec["id"],
        "query_id": q["id"],
        "protocol_id": "lavage-observational",
        "form_key": "baseline",
        "event": "baseline",
        "event_instance": 1,
        "token_id": 1,
        "membership_id": 999,
        "action": "sites",
        "path": "report.html",
    }


@pytest.mark.parametrize("role", ROLES)
def test_route_role_matrix(
    client: TestClient, world: World, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # access is under test here, not the efficacy report itself (see test_pages)
    monkeypatch.setattr("ductal.web.pages.reports._build", lambda *a, **k: None)
    values = _fixtures(client, world)
    csrf = login(client, role)
    routes = [r for r in routes_of(world.app) if is_api_route(r)]
    routes.sort(key=lambda r: r.path == "/logout")  # signing out last
    checked = 0
    for route in routes:
        permission = permission_of(route)
        assert permission is not None
        assert route.path_format is not None
        path = route.path_format.format(**{k: values[k] for k in route.param_convertors})
        for method in sorted(route.methods or []):
            api = path.startswith("/api/")
            if api:
                kwargs: dict[str, Any] = {"headers": bearer(world, role)}
                if method == "POST":
                    kwargs["json"] = {}
            else:
                kwargs = {"headers": {"accept": "text/html"}, "follow_redirects": False}
                if method == "POST":
                    kwargs["data"] = {"csrf_token": csrf}
            r = client.request(method, path, **kwargs)
            where = f"{role} {method} {route.path} -> {r.status_code}"
            if permission == PUBLIC:
                # open to all; the login form's own CSRF check may still refuse this dummy post
                assert r.status_code < 500, where
            elif role in PERMISSIONS[permission]:
                assert r.status_code not in (401, 403), where
                assert r.status_code < 500, where
            else:
                assert r.status_code == 403, where
            if api and r.status_code >= 400:
                assert_error_shape(r)
            checked += 1
    assert checked >= 50


def test_cross_site_access_is_refused(client: TestClient, world: World) -> None:
    sid = enrolled_subject(client, world)  # at RIV
    rec = save(client, world, sid, data=BASELINE).json()
    other = bearer(world, "hil_coordinator")  # coordinator at HIL only
    for path in (
        f"/api/v1/subjects/{sid}",
        f"/api/v1/subjects/{sid}/casebook",
        f"/api/v1/records/{rec['id']}",
    ):
        r = client.get(path, headers=other)
        assert r.status_code == 404, path
        assert_error_shape(r)
    r = client.post(
        f"/api/v1/subjects/{sid}/forms/baseline", json={"data": BASELINE}, headers=other
    )
    assert r.status_code == 404
    r = client.post(
        "/api/v1/subjects",
        headers=other,
        json={"protocol": "lavage-observational", "site": "RIV", "screening": {}},
    )
    assert r.status_code == 404
    listed = client.get("/api/v1/subjects", headers=other).json()
    assert listed["items"] == []
    assert client.get("/api/v1/queries", headers=other).json()["items"] == []
    csrf = login(client, "hil_coordinator")
    page = client.get(f"/subjects/{sid}", headers={"accept": "text/html"})
    assert page.status_code == 404
    post = client.post(
        f"/subjects/{sid}/entry/baseline/1/baseline",
        data={"csrf_token": csrf, "f_side": "left"},
        headers={"accept": "text/html"},
    )
    assert post.status_code == 404
