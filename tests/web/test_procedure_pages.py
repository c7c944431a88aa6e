"""The procedure pages: checks and override, the record with live feedback, results, printing."""

from __future__ import annotations

import datetime as dt
import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from ductal import records
from ductal.db import session_scope
from ductal.models import AuditEntry, FormRecord, Subject
from tests.web.conftest import World, login
from tests.web.test_procedure_api import _subject

HTML = {"accept": "text/html"}
TODAY = dt.date.today()
NAME = "Tang Ruolan (synthetic)"


def _checks_form(csrf: str, **over: str) -> dict[str, str]:
    data = {
        "csrf_token": csrf,
        "f_check_date": TODAY.isoformat(),
        "f_discharge_present": "0",
        "f_carcinoma_excluded": "1",
        "f_anticoagulant": "0",
        "f_antiplatelet": "0",
        "f_sedation_planned": "0",
        "f_irrigation_allergy": "none",
        "f_nipple_retracted": "0",
        "f_local_anaesthesia_planned": "1",
    }
    data.update(over)
    return data


def _procedure_form(csrf: str, end: str = "09:15", **over: str) -> dict[str, str | list[str]]:
    steps = ["cleanse", "massage", "scope", "prime", "dilate", "introduce", "distend", "advance"]
    data: dict[str, str | list[str]] = {
        "csrf_token": csrf,
        "form_key": "ductoscopy_procedure",
        "f_procedure_date": TODAY.isoformat(),
        "f_operator": "dr_inv",
        "f_side": "left",
        "f_start_time": "09:00",
        "f_end_time": end,
        "f_ducts_identified": "2",
        "f_ducts_cannulated": "1",
        "f_duct_positions": ["3"],
        "f_scope_diameter_mm": "0.55",
        "f_magnification": "40",
        "f_dilator_first_mm": "0.4",
        "f_dilator_last_mm": "0.8",
        "f_anaesthesia": ["topical"],
        "f_irrigation_volume_ml": "10",
        "f_steroid_agent": "dexamethasone",
        "f_steroid_dose_mg": "5",
        "f_antibiotic_added": "0",
        "f_finding": "normal",
        "f_biopsy_taken": "0",
        "f_cytology_taken": "1",
        "f_pain_score": "2",
        "f_complications": ["none"],
    }
    for i, step in enumerate(steps):
        data[f"f_step_{step}_at"] = f"09:{i:02d}"
    data.update(over)
    return data


def test_checks_override_record_and_print(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    csrf = login(client, "coordinator")
    casebook = client.get(f"/subjects/{sid}", headers=HTML)
    assert f'href="/subjects/{sid}/procedure"' in casebook.text
    page = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert page.status_code == 200
    assert "No pre-session checks recorded" in page.text and 'id="blocked"' in page.text

    # a missing answer re-renders the form with the user's values and the problem
    r = client.post(
        f"/subjects/{sid}/procedure/checks",
        data=_checks_form(csrf, f_carcinoma_excluded=""),
        headers=HTML,
    )
    assert r.status_code == 422
    assert 'data-for="carcinoma_excluded"' in r.text
    assert re.search(r'f_local_anaesthesia_planned" value="1"[^>]*checked', r.text)
    r = client.post(
        f"/subjects/{sid}/procedure/checks",
        data=_checks_form(csrf, f_carcinoma_excluded="0"),
        headers=HTML,
    )
    assert r.status_code == 200 and 'id="blocked"' in r.text  # followed the redirect
    assert 'data-check="carcinoma_not_excluded"' in r.text
    assert "/procedure/override" not in r.text  # a coordinator cannot override

    # the record page says the checks are not clear; saving is refused with the reason
    form = client.get(f"/subjects/{sid}/procedure/record", headers=HTML)
    assert 'id="checks-open"' in form.text and "carcinoma_not_excluded" in form.text
    assert form.text.index("step_cleanse_at") < form.text.index("step_advance_at")
    refused = client.post(
        f"/subjects/{sid}/procedure/record", data=_procedure_form(csrf), headers=HTML
    )
    assert refused.status_code == 409 and 'id="form-error"' in refused.text
    assert 'value="09:15"' in refused.text  # the draft is kept

    csrf = login(client, "investigator")
    page = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert "/procedure/override" in page.text
    r = client.post(
        f"/subjects/{sid}/procedure/override",
        data={
            "csrf_token": csrf,
            "day": TODAY.isoformat(),
            "check": "carcinoma_not_excluded",
            "reason": "MDT review: benign core biopsy",
        },
        headers=HTML,
    )
    assert r.status_code == 200 and 'id="may-start"' in r.text
    assert "MDT review: benign core biopsy" in r.text

    # live feedback: the duration past the limit is shown while typing, nothing stored
    fb = client.post(
        f"/subjects/{sid}/procedure/feedback", data=_procedure_form(csrf), headers=HTML
    )
    assert fb.status_code == 200
    assert 'data-rule="duration_over_limit"' in fb.text and "<b>15" in fb.text
    ok = client.post(
        f"/subjects/{sid}/procedure/feedback", data=_procedure_form(csrf, end="09:10"), headers=HTML
    )
    assert 'id="regimen-ok"' in ok.text

    png = b"\x89PNG\r\n\x1a\n" + b"still" * 50
    saved = client.post(
        f"/subjects/{sid}/procedure/record",
        data=_procedure_form(csrf),
        files={"upload_image_1": ("still.png", png, "image/png")},
        headers=HTML,
    )
    assert saved.status_code == 200, saved.text[:2000]
    assert 'data-rule="duration_over_limit"' in saved.text
    record_id = int(re.findall(r"/records/(\d+)/procedure-report", saved.text)[0])
    with session_scope(world.engine) as s:
        rec = s.get_one(FormRecord, record_id)
        assert rec.data["start_time"] == f"{TODAY.isoformat()}T09:00:00Z"
        assert rec.data["duration_min"] == 15
        ref = rec.data["image_1"]
    img = client.get(f"/subjects/{sid}/procedure/image?ref={ref}", headers=HTML)
    assert img.status_code == 200 and img.content == png
    pdf = client.get(f"/records/{record_id}/procedure-report", headers=HTML)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    with session_scope(world.engine) as s:
        subject = s.scalars(select(Subject).where(Subject.study_id == sid)).one()
        records.set_identity(
            s,
            subject=subject,
            identity={"name": NAME},
            vault=world.app.state.ductal.vault,
            actor="setup",
        )
    sheet = client.get(
        f"/subjects/{sid}/procedure/instructions?lang=zh&format=html&with_name=true", headers=HTML
    )
    assert sheet.status_code == 200 and NAME in sheet.text and "患者须知" in sheet.text

    hub = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert "over limit" in hub.text and 'id="result-form"' in hub.text
    assert "cytology" in hub.text
    r = client.post(
        f"/subjects/{sid}/procedure/result",
        data={
            "csrf_token": csrf,
            "instance": "1",
            "result_date": TODAY.isoformat(),
            "result": "benign",
        },
        headers=HTML,
    )
    assert r.status_code == 200 and "Pathology result saved." in r.text
    with session_scope(world.engine) as s:
        overrides = s.scalars(select(AuditEntry).where(AuditEntry.action == "override")).all()
        assert [(e.actor, e.reason) for e in overrides] == [
            ("investigator", "MDT review: benign core biopsy")
        ]


def test_monitor_reads_statistician_never_sees_names(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    login(client, "monitor")
    page = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert page.status_code == 200 and 'id="record-procedure"' not in page.text
    assert client.get(f"/subjects/{sid}/procedure/record", headers=HTML).status_code == 403
    login(client, "statistician")
    page = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert page.status_code == 200 and 'id="sheet-name"' not in page.text
    r = client.get(f"/subjects/{sid}/procedure/instructions?with_name=true", headers=HTML)
    assert r.status_code == 403


def test_study_page_dashboard_and_chinese(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    csrf = login(client, "coordinator")
    client.post(f"/subjects/{sid}/procedure/checks", data=_checks_form(csrf), headers=HTML)
    r = client.post(
        f"/subjects/{sid}/procedure/record",
        data=_procedure_form(csrf, end="09:09"),
        headers=HTML,
    )
    assert r.status_code == 200
    dashboard = client.get("/studies/lavage-observational", headers=HTML)
    assert "/studies/lavage-observational/procedure/summary" in dashboard.text
    summary = client.get("/studies/lavage-observational/procedure/summary", headers=HTML)
    assert 'id="sum-overdue">0<' in summary.text and "1</span> pathology results awaited" in (
        summary.text
    )
    study = client.get("/studies/lavage-observational/procedure", headers=HTML)
    assert study.status_code == 200 and sid in study.text and "dr_inv" in study.text
    log = client.get("/studies/lavage-observational/procedure/operator-log", headers=HTML)
    assert log.content.startswith(b"%PDF")
    blank = client.get(
        "/studies/lavage-observational/procedure/instructions?format=html&lang=en", headers=HTML
    )
    assert blank.status_code == 200 and "Riverside (test)" in blank.text
    client.post("/account/language", data={"csrf_token": csrf, "language": "zh-Hans"})
    zh = client.get(f"/subjects/{sid}/procedure", headers=HTML)
    assert "乳管镜与冲洗" in zh.text and "操作前核查" in zh.text
    form = client.get(f"/subjects/{sid}/procedure/record", headers=HTML)
    assert "步骤核对清单" in form.text and "冲洗方案" in form.text


def test_lavage_session_page(client: TestClient, world: World) -> None:
    sid = _subject(client, world)
    csrf = login(client, "coordinator")
    client.post(f"/subjects/{sid}/procedure/checks", data=_checks_form(csrf), headers=HTML)
    form = client.get(f"/subjects/{sid}/procedure/lavage", headers=HTML)
    assert form.status_code == 200 and 'id="checks-ok"' in form.text
    session = {
        "csrf_token": csrf,
        "form_key": "lavage_session",
        "f_session_date": TODAY.isoformat(),
        "f_session_number": "1",
        "f_procedure": "infusion",
        "f_steroid_agent": "dexamethasone",
        "f_steroid_dose_mg": "30",
        "f_antibiotic_added": "0",
    }
    fb = client.post(f"/subjects/{sid}/procedure/feedback", data=session, headers=HTML)
    assert 'data-rule="steroid_dose_out_of_range"' in fb.text
    r = client.post(
        f"/subjects/{sid}/procedure/lavage", data={**session, "f_session_number": ""}, headers=HTML
    )
    assert r.status_code == 422 and 'data-for="session_number"' in r.text
    r = client.post(f"/subjects/{sid}/procedure/lavage", data=session, headers=HTML)
    assert r.status_code == 200 and "Lavage session saved." in r.text
    assert "on time 1" in r.text  # the infusion opens the course, on its day
    with session_scope(world.engine) as s:
        saved = s.scalars(select(FormRecord).where(FormRecord.form_key == "lavage_session")).one()
        assert saved.data["steroid_dose_mg"] == 30
