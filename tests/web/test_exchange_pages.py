"""The Exports page: downloads with the export options, dry-run checks and admin imports."""

from __future__ import annotations

import io
import json
import zipfile

from fastapi.testclient import TestClient

from tests.web.conftest import World, login
from tests.web.test_exchange_api import GOOD_ROWS, NAME, _study, dictionary

HTML = {"accept": "text/html"}
PAGE = "/studies/lavage-observational/exports"


def test_statistician_downloads_with_options(client: TestClient, world: World) -> None:
    sid = _study(client, world)
    login(client, "statistician")
    page = client.get(PAGE, headers=HTML)
    assert page.status_code == 200
    assert 'name="hash_ids"' in page.text and 'name="identified"' not in page.text
    assert 'id="import-card"' not in page.text  # imports are for administrators
    nav = client.get("/studies/lavage-observational", headers=HTML)
    assert f'href="{PAGE}"' in nav.text
    r = client.get(f"{PAGE}/download?fmt=spss&hash_ids=true", headers=HTML)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        names = archive.namelist()
        blob = b"".join(archive.read(n) for n in names)
        manifest = json.loads(archive.read("manifest.json"))
    assert any(n.endswith(".sav") for n in names)
    assert NAME.encode() not in blob and sid.encode() not in blob
    assert manifest["exported_by"] == "statistician"
    r = client.get(f"{PAGE}/download?fmt=fhir&identified=true", headers=HTML)
    assert r.status_code == 403


def test_other_roles_cannot_export(client: TestClient, world: World) -> None:
    for role in ("coordinator", "monitor", "investigator", "read_only"):
        login(client, role)
        assert client.get(PAGE, headers=HTML).status_code == 403, role
        nav = client.get("/studies/lavage-observational", headers=HTML)
        assert f'href="{PAGE}"' not in nav.text


def test_check_and_import_show_their_report(client: TestClient, world: World) -> None:
    csrf = login(client, "admin")
    broken = dictionary(*GOOD_ROWS, ("bad name!", "intake", "", "wibble", "Broken"))
    r = client.post(
        f"{PAGE}/check",
        data={"csrf_token": csrf, "kind": "dictionary"},
        files={"file": ("dict.csv", broken.encode(), "text/csv")},
        headers=HTML,
    )
    assert r.status_code == 200 and 'id="exchange-report"' in r.text
    assert "line 5" in r.text and "bad name!" in r.text
    r = client.post(
        f"{PAGE}/import",
        data={"csrf_token": csrf, "kind": "redcap", "protocol": "web-import"},
        files={"dictionary": ("dict.csv", broken.encode(), "text/csv")},
        headers=HTML,
    )
    assert r.status_code == 422 and 'id="exchange-error"' in r.text and "line 5" in r.text
    assert client.get("/studies/web-import", headers=HTML).status_code == 404  # nothing stored
    r = client.post(
        f"{PAGE}/import",
        data={"csrf_token": csrf, "kind": "redcap", "protocol": "web-import", "partial": "true"},
        files={"dictionary": ("dict.csv", broken.encode(), "text/csv")},
        headers=HTML,
    )
    assert r.status_code == 200 and "web-import" in r.text and "forms_defined 1" in r.text
    assert client.get("/studies/web-import", headers=HTML).status_code == 200
    csrf = login(client, "statistician")
    r = client.post(
        f"{PAGE}/import",
        data={"csrf_token": csrf, "kind": "redcap"},
        files={"dictionary": ("dict.csv", broken.encode(), "text/csv")},
        headers=HTML,
    )
    assert r.status_code == 403
