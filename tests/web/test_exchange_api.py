"""Data exchange through the REST API: exports as downloads, imports, dry-run checks."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ductal import records
from ductal.db import session_scope
from ductal.models import AuditEntry, ProtocolVersion, Subject
from tests.web.conftest import BASELINE, World, bearer
from tests.web.test_api import enrolled_subject, save
from tests.web.test_errors import assert_error_shape

NAME = "Qiu Xiaoyan (synthetic)"
MRN = "MRN-99887766"
BASE = "/api/v1/protocols/lavage-observational/export"


def _study(client: TestClient, world: World) -> str:
    sid = enrolled_subject(client, world)
    assert save(client, world, sid, data=BASELINE).status_code == 200
    with session_scope(world.engine) as s:
        subject = s.scalars(select(Subject).where(Subject.study_id == sid)).one()
        records.set_identity(
            s,
            subject=subject,
            identity={"name": NAME, "hospital_record_number": MRN},
            vault=world.app.state.ductal.vault,
            actor="setup",
        )
    return sid


def _files(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {n: archive.read(n) for n in archive.namelist()}


@pytest.mark.parametrize("fmt", ["redcap", "odm", "fhir", "sas", "spss", "stata", "csv"])
def test_export_is_pseudonymous_zip_with_manifest(
    client: TestClient, world: World, fmt: str
) -> None:
    sid = _study(client, world)
    r = client.get(f"{BASE}/{fmt}", headers=bearer(world, "statistician"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"]
    files = _files(r.content)
    manifests = [n for n in files if n.endswith("manifest.json")]
    assert len(manifests) == 1
    manifest = json.loads(files[manifests[0]])
    assert manifest["subjects"] == 1 and manifest["exported_by"] == "statistician"
    blob = b"".join(files.values())
    assert NAME.encode() not in blob and MRN.encode() not in blob
    assert sid.encode() in blob  # pseudonymous: the study id is there, the identity is not


def test_export_options_and_roles(client: TestClient, world: World) -> None:
    sid = _study(client, world)
    for role in ("coordinator", "investigator", "monitor", "read_only"):
        r = client.get(f"{BASE}/csv", headers=bearer(world, role))
        assert r.status_code == 403, role
        assert_error_shape(r)
    hashed = client.get(
        f"{BASE}/csv?hash_ids=true&shift_dates=true&max_shift_days=30&drop_free_text=true",
        headers=bearer(world, "admin"),
    )
    assert hashed.status_code == 200
    files = _files(hashed.content)
    assert sid.encode() not in b"".join(v for k, v in files.items() if k != "manifest.json")
    deid = json.loads(files["manifest.json"])["deidentification"]
    assert "HMAC" in deid["study_ids"]
    # the baseline date moved (compared in its own column: a date of another form, moved by
    # the same subject's offset, may land on 2024-03-02)
    baseline = next(v for k, v in files.items() if k.endswith("baseline.csv")).decode()
    moved = [row["assessment_date"] for row in csv.DictReader(io.StringIO(baseline))]
    assert moved and "2024-03-02" not in moved
    wide = _files(client.get(f"{BASE}/stata?wide=true", headers=bearer(world, "admin")).content)
    assert any(n.endswith(".dta") for n in wide)
    bad = client.get(f"{BASE}/csv?max_shift_days=0", headers=bearer(world, "admin"))
    assert bad.status_code == 422
    assert_error_shape(bad)


def test_identified_fhir_only_for_admins_and_audited(client: TestClient, world: World) -> None:
    sid = _study(client, world)
    r = client.get(f"{BASE}/fhir?identified=true", headers=bearer(world, "statistician"))
    assert r.status_code == 403
    r = client.get(
        f"/api/v1/subjects/{sid}/fhir?identified=true", headers=bearer(world, "statistician")
    )
    assert r.status_code == 403
    plain = client.get(f"/api/v1/subjects/{sid}/fhir", headers=bearer(world, "statistician"))
    assert plain.status_code == 200 and plain.json()["resourceType"] == "Bundle"
    assert NAME not in plain.text
    named = client.get(
        f"/api/v1/subjects/{sid}/fhir?identified=true&fhir_version=R5",
        headers=bearer(world, "admin"),
    )
    assert named.status_code == 200 and "Qiu Xiaoyan" in named.text
    with session_scope(world.engine) as s:
        disclosed = s.scalars(select(AuditEntry).where(AuditEntry.action == "disclose")).all()
        assert [(e.actor, e.subject_study_id) for e in disclosed] == [("admin", sid)]
    r = client.get(f"{BASE}/csv?identified=true", headers=bearer(world, "admin"))
    assert r.status_code == 422


COLUMNS = (
    "Variable / Field Name",
    "Form Name",
    "Section Header",
    "Field Type",
    "Field Label",
    "Choices, Calculations, OR Slider Labels",
    "Field Note",
    "Text Validation Type OR Show Slider Number",
    "Text Validation Min",
    "Text Validation Max",
    "Identifier?",
    "Branching Logic (Show field only if...)",
    "Required Field?",
    "Custom Alignment",
    "Question Number (surveys only)",
    "Matrix Group Name",
    "Matrix Ranking?",
    "Field Annotation",
)


def dictionary(*rows: tuple[str, ...]) -> str:
    """Return a REDCap data dictionary CSV; each row gives the first columns, in order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(list(row) + [""] * (len(COLUMNS) - len(row)))
    return out.getvalue()


GOOD_ROWS = (
    ("record_id", "intake", "", "text", "Record ID"),
    ("visit_date", "intake", "", "text", "Visit date", "", "", "date_ymd", "", "", "", "", "y"),
    ("pain", "intake", "", "radio", "Pain", "0, none | 1, mild", "", "", "", "", "", "", "y"),
)
DICTIONARY = dictionary(*GOOD_ROWS)


def test_import_redcap_all_or_nothing_then_partial(client: TestClient, world: World) -> None:
    broken = dictionary(*GOOD_ROWS, ("bad name!", "intake", "", "wibble", "Broken"))
    files = {"dictionary": ("dict.csv", broken.encode(), "text/csv")}
    form = {"protocol": "imported-intake"}
    for role in ("statistician", "coordinator"):
        r = client.post(
            "/api/v1/protocols/import/redcap", files=files, data=form, headers=bearer(world, role)
        )
        assert r.status_code == 403
    r = client.post(
        "/api/v1/protocols/import/redcap", files=files, data=form, headers=bearer(world, "admin")
    )
    assert r.status_code == 422, r.text
    assert_error_shape(r)
    problems = r.json()["error"]["fields"]
    assert any(p["field"].startswith("line 5") for p in problems)
    with session_scope(world.engine) as s:
        assert (
            s.scalars(
                select(ProtocolVersion).where(ProtocolVersion.protocol_id == "imported-intake")
            ).all()
            == []
        )
    r = client.post(
        "/api/v1/protocols/import/redcap",
        files=files,
        data={**form, "partial": "true"},
        headers=bearer(world, "admin"),
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["protocol"] == "imported-intake"
    assert report["imported"]["forms_defined"] == 1
    assert report["errors"] and all(e["where"].startswith("line 5") for e in report["errors"])


def test_check_endpoints_store_nothing(client: TestClient, world: World) -> None:
    broken = dictionary(*GOOD_ROWS, ("pain", "intake", "", "text", "Again"))
    r = client.post(
        "/api/v1/exchange/check/dictionary",
        files={"file": ("dict.csv", broken.encode(), "text/csv")},
        headers=bearer(world, "statistician"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is False
    assert any("pain" in e["item"] or "pain" in e["message"] for e in r.json()["errors"])
    r = client.post(
        "/api/v1/exchange/check/odm",
        files={"file": ("study.xml", b"<ODM><nothing/>", "application/xml")},
        headers=bearer(world, "statistician"),
    )
    assert r.status_code == 200 and r.json()["ok"] is False and r.json()["errors"]
    r = client.post(
        "/api/v1/exchange/check/odm",
        files={"file": ("study.xml", b"<ODM/>", "application/xml")},
        headers=bearer(world, "monitor"),
    )
    assert r.status_code == 403


def test_odm_round_trip_through_the_api(client: TestClient, world: World) -> None:
    _study(client, world)
    exported = _files(client.get(f"{BASE}/odm", headers=bearer(world, "admin")).content)
    xml = exported["lavage-observational.xml"]
    check = client.post(
        "/api/v1/exchange/check/odm",
        files={"file": ("study.xml", xml, "application/xml")},
        headers=bearer(world, "admin"),
    )
    assert check.status_code == 200, check.text
    assert check.json()["ok"] is True, check.json()["errors"][:3]
    # importing the same subjects again is refused as a whole
    r = client.post(
        "/api/v1/protocols/import/odm",
        files={"file": ("study.xml", xml, "application/xml")},
        data={"protocol": "lavage-observational"},
        headers=bearer(world, "admin"),
    )
    assert r.status_code in (200, 409, 422), r.text
    if r.status_code == 200:
        assert r.json()["protocol"] == "lavage-observational"
    else:
        assert_error_shape(r)
