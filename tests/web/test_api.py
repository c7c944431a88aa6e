"""REST API through the test client: the study workflow, tokens, sessions, CSRF, throttling."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ductal.audit import verify_chain
from ductal.db import session_scope
from ductal.models import AuditEntry, FormRecord, Signature
from tests.web.conftest import BASELINE, ELIGIBLE, PASSWORD, World, bearer, login


def enrolled_subject(client: TestClient, world: World) -> str:
    h = bearer(world, "coordinator")
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
        headers=h,
    )
    assert r.status_code == 201, r.text
    study_id = r.json()["study_id"]
    assert r.json()["status"] == "consented"
    r = client.post(
        f"/api/v1/subjects/{study_id}/enrol", json={"enrolled_on": "2024-03-02"}, headers=h
    )
    assert r.status_code == 200 and r.json()["status"] == "enrolled"
    return str(study_id)


def save(client: TestClient, world: World, study_id: str, user: str = "coordinator", **body: Any):
    return client.post(
        f"/api/v1/subjects/{study_id}/forms/{body.pop('form', 'baseline')}",
        json=body,
        headers=bearer(world, user),
    )


def test_screen_ineligible_gives_reasons(client: TestClient, world: World) -> None:
    data = {**ELIGIBLE, "sex": "male", "age": 17}
    live = client.post(
        "/api/v1/eligibility",
        json={"protocol": "lavage-observational", "screening": data},
        headers=bearer(world, "coordinator"),
    )
    assert live.status_code == 200
    assert live.json()["eligible"] is False
    assert any("Female" in r for r in live.json()["reasons"])
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": data},
        headers=bearer(world, "coordinator"),
    )
    assert r.status_code == 201
    assert r.json()["status"] == "ineligible"
    assert "Aged 18" in r.json()["status_reason"]


def test_save_validate_conflict_reason_and_signature_voided(
    client: TestClient, world: World
) -> None:
    sid = enrolled_subject(client, world)
    # all problems at once, nothing stored
    bad = save(client, world, sid, data={**BASELINE, "height_cm": 500, "culture": "positive"})
    assert bad.status_code == 422
    fields = {f["field"] for f in bad.json()["error"]["fields"]}
    assert {"height_cm", "organism", "infection_evidence"} <= fields
    with session_scope(world.engine) as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(FormRecord)
                .where(FormRecord.form_key == "baseline")
            )
            == 0
        )
    ok = save(client, world, sid, data=BASELINE)
    assert ok.status_code == 200, ok.text
    rec = ok.json()
    assert rec["data"]["bmi"] == 22.1  # 58 / 1.62², one decimal
    # investigator signs with the password asked again
    wrong = client.post(
        f"/api/v1/records/{rec['id']}/sign",
        json={"password": "not my password", "meaning": "authorship"},
        headers=bearer(world, "investigator"),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["fields"] == [{"field": "password", "message": "is not correct"}]
    signed = client.post(
        f"/api/v1/records/{rec['id']}/sign",
        json={"password": PASSWORD, "meaning": "authorship"},
        headers=bearer(world, "investigator"),
    )
    assert signed.status_code == 200, signed.text
    assert signed.json()["status"] == "signed"
    version = signed.json()["version"]
    # someone else edits from an old version: conflict, nothing stored
    stale = save(
        client, world, sid, data={**BASELINE, "parity": 2}, expected_version=1, reason="typo"
    )
    assert stale.status_code == 409
    # a change needs a reason
    no_reason = save(client, world, sid, data={**BASELINE, "parity": 2}, expected_version=version)
    assert no_reason.status_code == 422
    assert no_reason.json()["error"]["fields"][0]["field"] == "reason"
    changed = save(
        client,
        world,
        sid,
        data={**BASELINE, "parity": 2},
        expected_version=version,
        reason="parity from source notes",
    )
    assert changed.status_code == 200
    assert changed.json()["status"] == "complete"
    sigs = changed.json()["signatures"]
    assert sigs[0]["voided_at"] is not None
    assert sigs[0]["void_reason"] == "data changed after signing"
    with session_scope(world.engine) as s:
        actions = list(s.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
        assert "reauth_failed" in actions  # the refused signature attempt is kept
        assert s.scalar(select(func.count()).select_from(Signature)) == 1
        assert verify_chain(s).ok


def test_query_workflow_verify_lock_unlock(client: TestClient, world: World) -> None:
    sid = enrolled_subject(client, world)
    rec = save(client, world, sid, data=BASELINE).json()
    q = client.post(
        f"/api/v1/records/{rec['id']}/queries",
        json={"field": "weight_kg", "text": "Please confirm the weight"},
        headers=bearer(world, "monitor"),
    )
    assert q.status_code == 201
    qid = q.json()["id"]
    listed = client.get("/api/v1/queries?status=open", headers=bearer(world, "coordinator"))
    assert [x["id"] for x in listed.json()["items"]] == [qid]
    a = client.post(
        f"/api/v1/queries/{qid}/answer",
        json={"answer": "Confirmed, 58 kg"},
        headers=bearer(world, "coordinator"),
    )
    assert a.status_code == 200 and a.json()["status"] == "answered"
    c = client.post(f"/api/v1/queries/{qid}/close", json={}, headers=bearer(world, "monitor"))
    assert c.json()["status"] == "closed"
    v = client.post(
        f"/api/v1/records/{rec['id']}/verify", json={}, headers=bearer(world, "monitor")
    )
    assert v.json()["status"] == "verified"
    lk = client.post(f"/api/v1/records/{rec['id']}/lock", json={}, headers=bearer(world, "monitor"))
    assert lk.json()["status"] == "locked"
    edit = save(
        client,
        world,
        sid,
        data={**BASELINE, "parity": 1},
        expected_version=lk.json()["version"],
        reason="x",
    )
    assert edit.status_code == 409
    un = client.post(
        f"/api/v1/records/{rec['id']}/unlock",
        json={"reason": "late lab result"},
        headers=bearer(world, "admin"),
    )
    assert un.json()["status"] == "verified"


def test_pagination_is_complete_and_streamed(client: TestClient, world: World) -> None:
    h = bearer(world, "coordinator")
    for _ in range(5):
        client.post(
            "/api/v1/subjects",
            json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
            headers=h,
        )
    seen: list[str] = []
    after = None
    while True:
        url = "/api/v1/subjects?limit=2" + (f"&after={after}" if after else "")
        page = client.get(url, headers=h).json()
        seen += [s["study_id"] for s in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) == 5


def test_session_login_csrf_and_logout(client: TestClient, world: World) -> None:
    csrf = login(client, "coordinator")
    # the API accepts the session cookie, but a write needs the CSRF header
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
        headers={"X-CSRF-Token": "forged"},
    )
    assert r.status_code == 403
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 201
    assert client.get("/api/v1/me").json()["username"] == "coordinator"
    client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert client.get("/api/v1/me").status_code == 401


def test_login_throttled_and_failures_audited(client: TestClient, world: World) -> None:
    page = client.get("/login", headers={"accept": "text/html"})
    import re

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    statuses = []
    for _ in range(4):
        r = client.post(
            "/login",
            data={
                "username": "monitor",
                "password": "wrong password!",
                "csrf_token": token.group(1),
            },
            follow_redirects=False,
        )
        statuses.append(r.status_code)
    assert statuses == [401, 401, 401, 429]
    # even the right password is refused while throttled
    r = client.post(
        "/login",
        data={"username": "monitor", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert r.status_code == 429
    with session_scope(world.engine) as s:
        failed = s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "login_failed")
        )
        assert failed == 5


def test_expired_session_is_refused(client: TestClient, world: World) -> None:
    import datetime as dt

    from sqlalchemy import update

    from ductal.web.store import WebSession

    login(client, "coordinator")
    with session_scope(world.engine) as s:
        s.execute(
            update(WebSession).values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2))
        )
    r = client.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
    page = client.get("/queries", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and "expired=1" in page.headers["location"]


def test_identity_only_for_admin_and_audited(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/subjects",
        json={
            "protocol": "lavage-observational",
            "site": "RIV",
            "screening": ELIGIBLE,
            "identity": {"name": "Test Person", "date_of_birth": "1990-01-01"},
        },
        headers=bearer(world, "coordinator"),
    )
    sid = r.json()["study_id"]
    assert "Test Person" not in r.text
    for role in ("coordinator", "investigator", "monitor", "statistician", "read_only"):
        assert (
            client.get(f"/api/v1/subjects/{sid}/identity", headers=bearer(world, role)).status_code
            == 403
        )
    ok = client.get(f"/api/v1/subjects/{sid}/identity", headers=bearer(world, "admin"))
    assert ok.json()["identity"]["name"] == "Test Person"
    stats = client.get(f"/api/v1/subjects/{sid}/records", headers=bearer(world, "statistician"))
    assert "Test Person" not in stats.text and "1990-01-01" not in stats.text


def test_randomise_through_the_service(client: TestClient, world: World) -> None:
    h = bearer(world, "coordinator")
    screening = {**ELIGIBLE, "severity_score": 7, "severity_group": "severe"}
    r = client.post(
        "/api/v1/subjects",
        json={"protocol": "lavage-vs-steroid-ni", "site": "RIV", "screening": screening},
        headers=h,
    )
    sid = r.json()["study_id"]
    client.post(f"/api/v1/subjects/{sid}/enrol", json={}, headers=h)
    refused = client.post(f"/api/v1/subjects/{sid}/randomise", headers=bearer(world, "monitor"))
    assert refused.status_code == 403
    done = client.post(f"/api/v1/subjects/{sid}/randomise", headers=h)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["arm"] == body["assignment"]["arm"] and body["arm"] in ("lavage", "steroid")
    assert body["assignment"]["stratum"]
    again = client.post(f"/api/v1/subjects/{sid}/randomise", headers=h)
    assert again.status_code == 409
