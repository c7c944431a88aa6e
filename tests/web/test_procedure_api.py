"""The procedure workflow through the REST API: checks, override, record, results, printing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from ductal import records
from ductal.db import session_scope
from ductal.models import AuditEntry, Subject
from tests.procedure.conftest import checks, procedure
from tests.web.conftest import BASELINE, World, bearer
from tests.web.test_api import enrolled_subject, save
from tests.web.test_errors import assert_error_shape

DAY = dt.date(2024, 3, 5)
NAME = "Lin Meiqi (synthetic)"


def _subject(client: TestClient, world: World) -> str:
    sid = enrolled_subject(client, world)
    assert save(client, world, sid, data=BASELINE).status_code == 200
    return sid


def _post(client: TestClient, world: World, user: str, path: str, body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1{path}", json=body, headers=bearer(world, user))


def _audit_count(world: World) -> int:
    with session_scope(world.engine) as s:
        return int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)


def test_block_override_record_and_pending_result(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    r = _post(
        client,
        world,
        "coordinator",
        f"/subjects/{sid}/procedure/checks",
        {"data": checks(DAY, carcinoma_excluded=0)},
    )
    assert r.status_code == 201, r.text
    assert r.json()["may_start"] is False
    assert r.json()["open_blocks"] == ["carcinoma_not_excluded"]

    long_one = procedure(DAY, end_time="2024-03-05T09:15:00Z", biopsy_taken=1)
    refused = _post(client, world, "investigator", f"/subjects/{sid}/procedure", {"data": long_one})
    assert refused.status_code == 409
    assert_error_shape(refused)
    assert "carcinoma_not_excluded" in refused.json()["error"]["message"]

    body = {"day": DAY.isoformat(), "check": "carcinoma_not_excluded", "reason": "MDT: benign"}
    r = _post(client, world, "coordinator", f"/subjects/{sid}/procedure/checks/override", body)
    assert r.status_code == 403
    r = _post(
        client,
        world,
        "investigator",
        f"/subjects/{sid}/procedure/checks/override",
        {**body, "reason": ""},
    )
    assert r.status_code == 422
    r = _post(client, world, "investigator", f"/subjects/{sid}/procedure/checks/override", body)
    assert r.status_code == 200, r.text
    assert r.json()["may_start"] is True
    assert r.json()["overridden"] == {"carcinoma_not_excluded": "MDT: benign"}
    got = client.get(
        f"/api/v1/subjects/{sid}/procedure/checks?day={DAY}", headers=bearer(world, "monitor")
    )
    assert got.json()["overridden"] == {"carcinoma_not_excluded": "MDT: benign"}

    saved = _post(client, world, "investigator", f"/subjects/{sid}/procedure", {"data": long_one})
    assert saved.status_code == 201, saved.text
    out = saved.json()
    assert [f["key"] for f in out["findings"]] == ["duration_over_limit"]
    assert "15" in out["findings"][0]["message"]
    assert out["pending_results"] == [{"instance": 1, "due": "2024-03-12"}]
    assert out["course_dates"][0] == [1, "2024-03-05"]

    pending = client.get(
        "/api/v1/pathology/pending?overdue=true", headers=bearer(world, "monitor")
    ).json()
    assert [(p["study_id"], p["sample_type"], p["due"]) for p in pending["items"]] == [
        (sid, "biopsy", "2024-03-12")
    ]
    result = {
        "result_date": "2024-03-11",
        "sample_type": "biopsy",
        "sample_date": "2024-03-05",
        "result": "malignant",
    }
    r = _post(client, world, "monitor", f"/subjects/{sid}/pathology-results", {"instance": 1})
    assert r.status_code == 403
    r = _post(
        client,
        world,
        "coordinator",
        f"/subjects/{sid}/pathology-results",
        {"instance": 1, "data": result},
    )
    assert r.status_code == 201, r.text
    assert r.json()["flagged"] is True
    assert client.get("/api/v1/pathology/pending", headers=bearer(world, "admin")).json() == {
        "items": [],
        "count": 0,
    }
    later = dt.date(2024, 3, 13)
    r = _post(
        client, world, "coordinator", f"/subjects/{sid}/procedure/checks", {"data": checks(later)}
    )
    assert "pathology_flagged" in r.json()["open_blocks"]

    course = client.get(
        f"/api/v1/subjects/{sid}/course?on=2024-03-10", headers=bearer(world, "statistician")
    ).json()
    assert course["first_session"] == "2024-03-05"
    assert course["on_time"] == 1  # the ductoscopy is the infusion of day 0
    assert course["missed"] >= 1  # the massage of day 1 was never recorded
    adherence = client.get(
        "/api/v1/protocols/lavage-observational/adherence", headers=bearer(world, "monitor")
    ).json()
    assert [row["study_id"] for row in adherence["items"]] == [sid]

    log = client.get(
        "/api/v1/protocols/lavage-observational/operator-log", headers=bearer(world, "monitor")
    ).json()
    assert log["all"]["sessions"] == 1 and log["all"]["over_limit"] == 1
    pdf = client.get(
        f"/api/v1/records/{out['record_id']}/procedure-report",
        headers=bearer(world, "investigator"),
    )
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    html = client.get(
        f"/api/v1/records/{out['record_id']}/procedure-report?format=html&lang=zh",
        headers=bearer(world, "statistician"),
    )
    assert html.status_code == 200 and sid in html.text and "MDT: benign" in html.text


def test_every_problem_at_once_and_nothing_stored(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    _post(client, world, "coordinator", f"/subjects/{sid}/procedure/checks", {"data": checks(DAY)})
    before = _audit_count(world)
    bad = procedure(
        DAY, scope_diameter_mm=2.0, step_dilate_at="2024-03-05T09:02:30Z", pain_score=None
    )
    r = _post(client, world, "coordinator", f"/subjects/{sid}/procedure", {"data": bad})
    assert r.status_code == 422
    fields = {f["field"]: f["message"] for f in r.json()["error"]["fields"]}
    assert set(fields) == {"scope_diameter_mm", "step_dilate_at", "pain_score"}
    assert "earlier step" in fields["step_dilate_at"]
    assert _audit_count(world) == before


def test_live_regimen_feedback_stores_nothing(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    before = _audit_count(world)
    draft = procedure(
        DAY, end_time="2024-03-05T09:14:00Z", antibiotic_added=1, antibiotic_agent="gentamicin"
    )
    r = _post(client, world, "coordinator", f"/subjects/{sid}/procedure/regimen", {"data": draft})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["duration_min"] == 14 and out["max_minutes"] == 12 and out["over_limit"] is True
    assert {f["key"] for f in out["findings"]} == {
        "duration_over_limit",
        "antibiotic_without_evidence",
    }
    short = procedure(DAY)
    r = _post(client, world, "coordinator", f"/subjects/{sid}/procedure/regimen", {"data": short})
    assert r.json()["findings"] == [] and r.json()["over_limit"] is False
    r = _post(client, world, "monitor", f"/subjects/{sid}/procedure/regimen", {"data": short})
    assert r.status_code == 403
    assert _audit_count(world) == before


def test_image_upload_by_checksum(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    png = b"\x89PNG\r\n\x1a\n" + b"synthetic still image" * 10
    up = client.post(
        f"/api/v1/subjects/{sid}/images",
        files={"file": ("still.png", png, "image/png")},
        headers=bearer(world, "coordinator"),
    )
    assert up.status_code == 201, up.text
    ref = up.json()["ref"]
    assert ref.startswith("sha256:") and len(ref) == 71
    # not yet part of a record: not served
    r = client.get(f"/api/v1/subjects/{sid}/images?ref={ref}", headers=bearer(world, "monitor"))
    assert r.status_code == 404
    _post(client, world, "coordinator", f"/subjects/{sid}/procedure/checks", {"data": checks(DAY)})
    r = _post(
        client,
        world,
        "coordinator",
        f"/subjects/{sid}/procedure",
        {"data": procedure(DAY, image_1=ref)},
    )
    assert r.status_code == 201, r.text
    r = client.get(f"/api/v1/subjects/{sid}/images?ref={ref}", headers=bearer(world, "monitor"))
    assert r.status_code == 200 and r.content == png and r.headers["content-type"] == "image/png"
    forged = "sha256:" + "0" * 64
    r = _post(
        client,
        world,
        "coordinator",
        f"/subjects/{sid}/procedure",
        {"data": procedure(DAY, image_2=forged)},
    )
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["fields"]] == ["image_2"]


def test_instruction_sheet_name_only_for_admin_or_investigator(
    client: TestClient, world: World
) -> None:
    sid = _subject(client, world)
    with session_scope(world.engine) as s:
        subject = s.scalars(select(Subject).where(Subject.study_id == sid)).one()
        records.set_identity(
            s,
            subject=subject,
            identity={"name": NAME},
            vault=world.app.state.ductal.vault,
            actor="setup",
        )
    path = f"/api/v1/subjects/{sid}/instructions"
    for role in ("coordinator", "monitor", "statistician", "read_only"):
        r = client.get(f"{path}?with_name=true", headers=bearer(world, role))
        assert r.status_code == 403, role
        plain = client.get(f"{path}?format=html", headers=bearer(world, role))
        assert plain.status_code == 200 and NAME not in plain.text
    for role in ("investigator", "admin"):
        r = client.get(f"{path}?with_name=true&format=html&lang=zh", headers=bearer(world, role))
        assert r.status_code == 200 and NAME in r.text and "患者须知" in r.text
    with session_scope(world.engine) as s:
        views = s.scalars(select(AuditEntry).where(AuditEntry.action == "view_identity")).all()
        assert sorted(e.actor for e in views) == ["admin", "investigator"]
    pdf = client.get(f"{path}?lang=en", headers=bearer(world, "coordinator"))
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    site = client.get(
        "/api/v1/instructions?format=html&protocol=lavage-observational",
        headers=bearer(world, "monitor"),
    )
    assert site.status_code == 200 and "Riverside (test)" in site.text and "12" in site.text
    other = client.get("/api/v1/instructions?site=HIL", headers=bearer(world, "monitor"))
    assert other.status_code == 404


def test_other_site_cannot_see_or_record(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    h = bearer(world, "hil_coordinator")
    assert client.get(f"/api/v1/subjects/{sid}/procedure/checks", headers=h).status_code == 404
    r = client.post(
        f"/api/v1/subjects/{sid}/procedure/checks", json={"data": checks(DAY)}, headers=h
    )
    assert r.status_code == 404
    assert client.get(f"/api/v1/subjects/{sid}/course", headers=h).status_code == 404
