"""Browser journey of the procedure pages (Playwright driving Debian's Chromium, live uvicorn).

An investigator records the pre-session checks, then a ductoscopy that runs past the protocol's
12-minute limit (the live panel warns while the times are typed), saves it, and prints the
patient instruction sheet. In English and in Chinese; screenshots go to
``$DUCTAL_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import BASELINE, ELIGIBLE, World
from tests.web.test_browser import CHROMIUM, _radio, _sign_in, browser, live

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]
__all__ = ["browser", "live"]  # the fixtures, shared with the study journey

WORDS = {
    "en": {
        "may_start": "may start",
        "saved": "Procedure saved",
        "sheet": "information for patients",
    },
    "zh-Hans": {"may_start": "可以开始操作", "saved": "操作记录已保存", "sheet": "患者须知"},
}


def _enrolled(base: str, world: World) -> str:
    headers = {"Authorization": f"Bearer {world.tokens['coordinator']}"}
    with httpx.Client(base_url=base, headers=headers) as http:
        r = http.post(
            "/api/v1/subjects",
            json={"protocol": "lavage-observational", "site": "RIV", "screening": ELIGIBLE},
        )
        sid = str(r.json()["study_id"])
        http.post(f"/api/v1/subjects/{sid}/enrol", json={"enrolled_on": "2024-03-02"})
        saved = http.post(f"/api/v1/subjects/{sid}/forms/baseline", json={"data": BASELINE})
        assert saved.status_code == 200, saved.text
    return sid


@pytest.mark.parametrize("lang", ["en", "zh-Hans"])
def test_procedure_journey(
    live: tuple[str, World], browser: object, lang: str, tmp_path: Path
) -> None:
    base, world = live
    words = WORDS[lang]
    shots = Path(os.environ.get("DUCTAL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    sid = _enrolled(base, world)
    today = dt.date.today().isoformat()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    _sign_in(page, base, "investigator", lang)

    # from the casebook to the procedure page, then the pre-session checks
    page.goto(f"{base}/subjects/{sid}")
    page.click("#procedure-link")
    page.wait_for_url(f"**/subjects/{sid}/procedure")
    assert page.locator("#blocked").is_visible()
    page.click("#record-checks")
    page.fill("#f_check_date", today)
    _radio(page, "discharge_present", "1")
    _radio(page, "discharge_spontaneous", "1")
    _radio(page, "discharge_persistent", "1")
    _radio(page, "discharge_single_duct", "1")
    page.select_option("#f_discharge_colour", "bloody")
    for key, value in (
        ("carcinoma_excluded", "1"),
        ("anticoagulant", "0"),
        ("antiplatelet", "1"),
        ("antithrombotic_plan", "paused"),
        ("sedation_planned", "0"),
        ("nipple_retracted", "0"),
        ("local_anaesthesia_planned", "1"),
    ):
        _radio(page, key, value)
    page.check("input[name=f_irrigation_allergy][value='none']")
    page.click("#save-checks")
    page.wait_for_url("**msg=checks_saved")
    assert words["may_start"] in page.locator("#may-start").inner_text()
    page.screenshot(path=str(shots / f"{lang}-proc-1-checks.png"), full_page=True)

    # the ductoscopy record: the checklist in order, the live panel warns past the limit
    page.click("#record-procedure")
    page.wait_for_selector("#regimen-ok")
    _radio(page, "side", "left")
    page.fill("#f_start_time", "09:00")
    page.fill("#f_ducts_identified", "2")
    page.fill("#f_ducts_cannulated", "1")
    page.check("input[name=f_duct_positions][value='3']")  # shown once a duct is cannulated
    page.fill("#f_scope_diameter_mm", "0.55")
    page.fill("#f_magnification", "40")
    steps = ["cleanse", "massage", "scope", "prime", "dilate", "introduce", "distend", "advance"]
    for i, step in enumerate(steps):
        page.fill(f"#f_step_{step}_at", f"09:{i + 1:02d}")
    page.fill("#f_dilator_first_mm", "0.4")  # shown because the dilation step has a time
    page.fill("#f_dilator_last_mm", "0.8")
    page.check("input[name=f_anaesthesia][value='topical']")
    page.fill("#f_irrigation_volume_ml", "10")
    _radio(page, "steroid_agent", "triamcinolone")
    page.fill("#f_steroid_dose_mg", "20")
    _radio(page, "antibiotic_added", "0")
    _radio(page, "finding", "inflammation")
    page.check("input[name=f_inflammation_features][value='flocculent']")
    page.select_option("#f_finding_clock", "3")
    page.fill("#f_finding_depth_mm", "15")
    _radio(page, "biopsy_taken", "0")
    _radio(page, "cytology_taken", "1")
    page.fill("#f_pain_score", "3")
    page.check("input[name=f_complications][value='none']")
    page.fill("#f_end_time", "09:16")
    page.locator("#f_end_time").dispatch_event("change")
    page.wait_for_selector("#regimen-feedback [data-rule=duration_over_limit]")
    assert "16" in page.locator("#duration").inner_text()
    page.screenshot(path=str(shots / f"{lang}-proc-2-record-warning.png"), full_page=True)
    page.click("#save-procedure")
    page.wait_for_url(f"**/subjects/{sid}/procedure/saved/*")
    assert words["saved"] in page.locator("#flash").inner_text()
    assert page.locator("[data-rule=duration_over_limit]").count() == 1
    page.screenshot(path=str(shots / f"{lang}-proc-3-saved.png"), full_page=True)

    # print the instruction sheet (HTML in a new tab; the PDF through the same form)
    page.select_option("#sheet-format", "html")
    page.check("#sheet-name")
    with ctx.expect_page() as opened:  # type: ignore[attr-defined]
        page.click("#print-sheet")
    sheet = opened.value
    sheet.wait_for_load_state()
    assert words["sheet"] in sheet.content()
    sheet.screenshot(path=str(shots / f"{lang}-proc-4-sheet.png"), full_page=True)
    pdf = page.request.get(f"{base}/subjects/{sid}/procedure/instructions?format=pdf")
    assert pdf.ok and pdf.body().startswith(b"%PDF")

    page.goto(f"{base}/subjects/{sid}/procedure")
    assert page.locator("#procedures-card .badge.warn").count() == 1  # over the limit
    page.screenshot(path=str(shots / f"{lang}-proc-5-overview.png"), full_page=True)
    ctx.close()  # type: ignore[attr-defined]

    # a statistician's Exports page: a pseudonymous download with the export options
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    _sign_in(page, base, "statistician", lang)
    page.click("nav.main a[href$='/exports']")
    page.check("input[name=fmt][value='stata']")
    page.check("input[name=hash_ids]")
    page.screenshot(path=str(shots / f"{lang}-proc-6-exports.png"), full_page=True)
    with page.expect_download() as download:  # type: ignore[attr-defined]
        page.click("#download")
    assert download.value.suggested_filename == "lavage-observational-stata.zip"
    ctx.close()  # type: ignore[attr-defined]
