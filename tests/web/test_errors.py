"""One JSON error shape everywhere, and bad input refused with a clear 4xx and nothing stored."""

from __future__ import annotations

import json

import httpx2 as httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ductal.db import session_scope
from ductal.models import AuditEntry, FormRecord
from tests.web.conftest import BASELINE, World, bearer, login


def assert_error_shape(r: httpx.Response | object) -> None:
    body = r.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "fields"}, err
    assert isinstance(err["code"], str) and err["code"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["fields"], list)
    for f in err["fields"]:
        assert set(f) == {"field", "message"} and all(isinstance(v, str) for v in f.values())


def _audit_count(world: World) -> int:
    with session_scope(world.engine) as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_error_shape_for_every_kind_of_failure(client: TestClient, world: World) -> None:
    h = bearer(world, "coordinator")
    cases = [
        (client.get("/api/v1/nothing-here", headers=h), 404, "not_found"),
        (client.delete("/api/v1/subjects", headers=h), 405, "method_not_allowed"),
        (client.get("/api/v1/me"), 401, "not_authenticated"),
        (
            client.get("/api/v1/me", headers={"Authorization": "Bearer dtl_forged"}),
            401,
            "not_authenticated",
        ),
        (client.get("/api/v1/admin", headers=h), 403, "forbidden"),
        (client.get("/api/v1/subjects/NOPE-1", headers=h), 404, "not_found"),
        (client.get("/api/v1/subjects?limit=0", headers=h), 422, "invalid_request"),
        (client.get("/api/v1/protocols/no-such", headers=h), 404, "not_found"),
    ]
    for r, status, code in cases:
        assert r.status_code == status, r.text
        assert_error_shape(r)
        assert r.json()["error"]["code"] == code


def test_bad_input_is_refused_and_nothing_stored(client: TestClient, world: World) -> None:
    from tests.web.test_api import enrolled_subject

    sid = enrolled_subject(client, world)
    h = {**bearer(world, "coordinator"), "content-type": "application/json"}
    url = f"/api/v1/subjects/{sid}/forms/baseline"
    before = _audit_count(world)
    bad = {
        "malformed JSON": (b'{"data": {"side": "left"', 400, "malformed_json"),
        "wrong type": (json.dumps({"data": "left"}).encode(), 422, "invalid_request"),
        "wrong version type": (
            json.dumps({"data": BASELINE, "expected_version": "1"}).encode(),
            422,
            "invalid_request",
        ),
        "unknown top-level field": (
            json.dumps({"data": BASELINE, "admin": True}).encode(),
            422,
            "invalid_request",
        ),
        "unknown form field": (
            json.dumps({"data": {**BASELINE, "blood_type": "O"}}).encode(),
            422,
            "validation_error",
        ),
        "oversized body": (
            json.dumps({"data": {**BASELINE, "x": "a" * 70_000}}).encode(),
            413,
            "payload_too_large",
        ),
    }
    for name, (payload, status, code) in bad.items():
        r = client.post(url, content=payload, headers=h)
        assert r.status_code == status, (name, r.text)
        assert_error_shape(r)
        assert r.json()["error"]["code"] == code, name
    unknown = client.post(url, json={"data": BASELINE, "admin": True}, headers=h).json()
    assert unknown["error"]["fields"] == [{"field": "admin", "message": "is not a known field"}]
    assert _audit_count(world) == before
    with session_scope(world.engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(FormRecord)
                .where(FormRecord.form_key == "baseline")
            )
            == 0
        )


def test_script_in_text_is_stored_as_text_and_escaped_on_output(
    client: TestClient, world: World
) -> None:
    from tests.web.test_api import enrolled_subject

    sid = enrolled_subject(client, world)
    script = '<script>alert("x")</script>'
    r = client.post(
        f"/api/v1/subjects/{sid}/forms/adverse_event",
        json={
            "event": "unscheduled",
            "data": {
                "term": script,
                "onset_date": "2024-03-05",
                "ctcae_grade": 1,
                "serious": 0,
                "relatedness": "unrelated",
            },
        },
        headers=bearer(world, "coordinator"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["term"] == script  # JSON keeps the text as text
    login(client, "coordinator")
    page = client.get(
        f"/subjects/{sid}/entry/unscheduled/1/adverse_event?instance=1",
        headers={"accept": "text/html"},
    )
    assert page.status_code == 200
    assert script not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_forged_csrf_on_a_page_form_stores_nothing(client: TestClient, world: World) -> None:
    from tests.web.test_api import enrolled_subject

    sid = enrolled_subject(client, world)
    login(client, "coordinator")
    before = _audit_count(world)
    r = client.post(
        f"/subjects/{sid}/entry/baseline/1/baseline",
        data={"csrf_token": "forged", "f_side": "left"},
        headers={"accept": "text/html"},
    )
    assert r.status_code == 403
    assert "CSRF" in r.text
    assert _audit_count(world) == before


def test_openapi_documents_every_api_route_and_the_error_shape(
    client: TestClient, world: World
) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["components"]["schemas"]["ErrorOut"]["required"] == ["error"]
    paths = doc["paths"]
    assert "/api/v1/subjects/{study_id}/forms/{form_key}" in paths
    assert not any(not p.startswith("/api/v1/") for p in paths)  # pages are not in the API doc
    for path, ops in paths.items():
        for method, op in ops.items():
            assert "422" in op["responses"], (method, path)
