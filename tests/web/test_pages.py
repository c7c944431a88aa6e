"""Pages through the test client: conflict and reason for change, audit CSV, reports, identity."""

from __future__ import annotations

import csv
import io
import re

import pytest
from fastapi.testclient import TestClient

from tests.web.conftest import BASELINE, ELIGIBLE, PASSWORD, World, login
from tests.web.test_api import enrolled_subject, save

HTML = {"accept": "text/html"}


def _form(data: dict[str, object]) -> dict[str, object]:
    return {f"f_{k}": str(v) for k, v in data.items()}


def test_conflict_shows_their_values_and_keeps_mine(client: TestClient, world: World) -> None:
    sid = enrolled_subject(client, world)
    rec = save(client, world, sid, data=BASELINE).json()
    csrf = login(client, "coordinator")
    url = f"/subjects/{sid}/entry/baseline/1/baseline"
    # someone else changes the weight first (version 1 -> 2)
    other = save(
        client,
        world,
        sid,
        user="investigator",
        data={**BASELINE, "weight_kg": 60},
        expected_version=rec["version"],
        reason="re-weighed",
    )
    assert other.status_code == 200
    mine = {**BASELINE, "weight_kg": 59}
    r = client.post(
        url,
        data={
            **_form(mine),
            "csrf_token": csrf,
            "expected_version": "1",
            "reason": "scale recalibrated",
        },
        headers=HTML,
    )
    assert r.status_code == 409
    assert 'id="conflict"' in r.text
    assert "investigator" in r.text  # who saved first
    assert "60.0" in r.text and 'value="59"' in r.text  # their value shown, mine kept
    assert 'name="expected_version" value="2"' in r.text  # saving again applies on top of theirs
    # without a reason the change is refused next to the reason field, the draft kept
    r = client.post(
        url, data={**_form(mine), "csrf_token": csrf, "expected_version": "2"}, headers=HTML
    )
    assert r.status_code == 422
    assert re.search(r'data-for="reason">[^<]*is required', r.text)
    assert 'value="59"' in r.text
    r = client.post(
        url,
        data={
            **_form(mine),
            "csrf_token": csrf,
            "expected_version": "2",
            "reason": "scale recalibrated",
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_audit_viewer_and_csv_export(client: TestClient, world: World) -> None:
    sid = enrolled_subject(client, world)
    rec = save(client, world, sid, data=BASELINE).json()
    save(
        client,
        world,
        sid,
        data={**BASELINE, "weight_kg": 61},
        expected_version=rec["version"],
        reason="source document says 61",
    )
    login(client, "monitor")
    page = client.get(f"/audit?subject={sid}&field=weight_kg", headers=HTML)
    assert page.status_code == 200
    assert "source document says 61" in page.text
    out = client.get(f"/audit.csv?record={rec['id']}&field=weight_kg")
    assert out.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(out.text)))
    changes = [(r["action"], r["before"], r["after"], r["reason"]) for r in rows]
    assert ("update", "58.0", "61.0", "source document says 61") in changes
    assert ("create", "", "58.0", "") in changes


def test_statistician_sees_no_identifiers_admin_does(client: TestClient, world: World) -> None:
    r = client.post(
        "/api/v1/subjects",
        json={
            "protocol": "lavage-observational",
            "site": "RIV",
            "screening": {
                "screening_date": "2024-03-01",
                "age": 40,
                "sex": "female",
                "non_lactating_6m": 1,
                "pathology_confirmed": 1,
                "diagnosis": "pd",
                "carcinoma_excluded": 1,
                "consent_signed": 1,
                "consent_date": "2024-03-01",
            },
            "identity": {"name": "Zhang Test", "phone": "+00 555 0199"},
        },
        headers={"Authorization": f"Bearer {world.tokens['coordinator']}"},
    )
    sid = r.json()["study_id"]
    login(client, "statistician")
    for url in (
        f"/subjects/{sid}",
        "/studies/lavage-observational/subjects",
        "/studies/lavage-observational",
    ):
        page = client.get(url, headers=HTML)
        assert page.status_code == 200
        assert "Zhang Test" not in page.text and "0199" not in page.text
    assert client.get(f"/subjects/{sid}/identity", headers=HTML).status_code == 403
    login(client, "admin")
    page = client.get(f"/subjects/{sid}/identity", headers=HTML)
    assert "Zhang Test" in page.text


def test_chinese_interface_is_chosen_per_user(client: TestClient, world: World) -> None:
    csrf = login(client, "coordinator")
    client.post(
        "/account/language",
        data={"csrf_token": csrf, "language": "zh-Hans", "next": "/account"},
        headers=HTML,
    )
    page = client.get("/studies/lavage-observational", headers=HTML)
    assert '<html lang="zh-Hans">' in page.text and "筛查新患者" in page.text
    assert "乳管冲洗" in page.text  # protocol title in Chinese
    login(client, "monitor")  # another user keeps English
    assert "Screen a patient" not in client.get("/studies/lavage-observational", headers=HTML).text
    assert '<html lang="en">' in client.get("/queries", headers=HTML).text


def test_password_change_needs_the_current_one(client: TestClient, world: World) -> None:
    csrf = login(client, "read_only")
    r = client.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "current_password": "nope",
            "new_password": "short",
            "repeat_password": "x",
        },
        headers=HTML,
    )
    assert r.status_code == 422
    assert "is not correct" in r.text and "does not match" in r.text
    r = client.post(
        "/account/password",
        data={
            "csrf_token": csrf,
            "current_password": PASSWORD,
            "new_password": "a much better passphrase",
            "repeat_password": "a much better passphrase",
        },
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 303
    login(client, "read_only", "a much better passphrase")


@pytest.mark.slow
def test_efficacy_report_generated_and_shown(client: TestClient, world: World) -> None:
    for _ in range(3):
        sid = enrolled_subject(client, world)
        save(client, world, sid, data=BASELINE)
    csrf = login(client, "investigator")
    page = client.get("/studies/lavage-observational/reports", headers=HTML)
    assert 'id="report-none"' in page.text
    r = client.post(
        "/studies/lavage-observational/reports", data={"csrf_token": csrf}, headers=HTML
    )  # the test client runs the background build before returning
    assert r.status_code == 200
    assert 'id="report-frame"' in r.text
    html = client.get("/studies/lavage-observational/reports/view/report.html")
    assert html.status_code == 200 and "lavage" in html.text.lower()
    escape = client.get("/studies/lavage-observational/reports/view/..%2F..%2F..%2Fsecret.key")
    assert escape.status_code == 404
    assert client.get("/studies/lavage-observational/reports/view/report.pdf").status_code == 200


def test_report_refused_when_it_would_pool_sites_one_cannot_see(
    client: TestClient, world: World
) -> None:
    # a subject at HIL, where the RIV investigator has no role
    h = {"Authorization": f"Bearer {world.tokens['hil_coordinator']}"}
    r = client.post(
        "/api/v1/subjects",
        headers=h,
        json={"protocol": "lavage-observational", "site": "HIL", "screening": ELIGIBLE},
    )
    assert r.status_code == 201
    login(client, "investigator")
    page = client.get("/studies/lavage-observational/reports", headers=HTML)
    assert page.status_code == 403
    assert "pools every site" in page.text


def test_admin_sees_sign_in_events_in_the_audit_viewer(client: TestClient, world: World) -> None:
    login(client, "monitor")
    assert "signed in" not in client.get("/audit", headers=HTML).text  # no site: not theirs
    login(client, "admin")
    page = client.get("/audit", headers=HTML)
    assert "signed in" in page.text and "monitor" in page.text
