"""Browser journeys with Playwright driving Debian's Chromium against a live uvicorn server.

A coordinator screens an ineligible and an eligible patient, enrols, fills a baseline form with a
branching question and validation errors, fixes it, records a lavage session and a follow-up; a
monitor opens a query, the coordinator answers it, an investigator signs. The same journey runs
in Chinese. Screenshots go to ``$DUCTAL_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine

from tests.web.conftest import PASSWORD, World, build_world

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live(engine: Engine, tmp_path: Path, database_url: str) -> Iterator[tuple[str, World]]:
    world = build_world(engine, tmp_path / "data", database_url=database_url)
    port = _free_port()
    config = uvicorn.Config(
        world.app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", world
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


WORDS = {
    "en": {
        "ineligible": "Not eligible",
        "eligible": "Eligible",
        "required": "is required",
        "at_most": "must be at most 200",
        "signed": "Signed by",
        "saved": "Saved.",
        "screen": "Screen a patient",
    },
    "zh-Hans": {
        "ineligible": "不符合入选条件",
        "eligible": "符合入选条件",
        "required": "为必填项",
        "at_most": "不得大于 200",
        "signed": "已签名",
        "saved": "已保存。",
        "screen": "筛查新患者",
    },
}


def _sign_in(page: object, base: str, user: str, lang: str) -> None:
    page.goto(f"{base}/login")  # type: ignore[attr-defined]
    page.fill("#username", user)  # type: ignore[attr-defined]
    page.fill("#password", PASSWORD)  # type: ignore[attr-defined]
    page.click("button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_url(f"{base}/studies/**")  # type: ignore[attr-defined]
    if lang == "zh-Hans":
        page.click("button[name=language][value=zh-Hans]")  # type: ignore[attr-defined]
        page.wait_for_load_state()  # type: ignore[attr-defined]


def _radio(page: object, key: str, value: str) -> None:
    page.check(f"input[name=f_{key}][value='{value}']")  # type: ignore[attr-defined]


def _screen(page: object, today: str, *, age: str, verdict: str) -> None:
    page.fill("#f_screening_date", today)  # type: ignore[attr-defined]
    page.fill("#f_age", age)  # type: ignore[attr-defined]
    _radio(page, "sex", "female")
    _radio(page, "non_lactating_6m", "1")
    _radio(page, "pathology_confirmed", "1")
    _radio(page, "diagnosis", "igm")  # shown by branching once pathology is confirmed
    _radio(page, "carcinoma_excluded", "1")
    _radio(page, "consent_signed", "1")
    page.fill("#f_consent_date", today)  # type: ignore[attr-defined]
    page.locator("#f_consent_date").dispatch_event("change")  # type: ignore[attr-defined]
    page.wait_for_function(  # type: ignore[attr-defined]
        "t => document.querySelector('#verdict') && "
        "document.querySelector('#verdict').textContent.includes(t)",
        arg=verdict,
    )


@pytest.mark.parametrize("lang", ["en", "zh-Hans"])
def test_study_journey(live: tuple[str, World], browser: object, lang: str, tmp_path: Path) -> None:
    base, _world = live
    words = WORDS[lang]
    shots = Path(os.environ.get("DUCTAL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    today = dt.date.today().isoformat()
    ctx = browser.new_context(viewport={"width": 1180, "height": 900})  # type: ignore[attr-defined]
    page = ctx.new_page()
    _sign_in(page, base, "coordinator", lang)
    assert words["screen"] in page.content()

    # an ineligible patient: the reason shows live, then on the subject page
    page.goto(f"{base}/studies/lavage-observational/screen")
    assert page.locator("#field-diagnosis").is_hidden()  # branching: no pathology yet
    _screen(page, today, age="17", verdict=words["ineligible"])
    reasons = page.locator("#eligibility .reasons").inner_text()
    assert "18" in reasons
    page.screenshot(path=str(shots / f"{lang}-1-screening-ineligible.png"), full_page=True)
    page.click("#save")
    page.wait_for_url("**/subjects/LAV-0001?msg=screened")
    assert "18" in page.locator("#status-reason").inner_text()

    # an eligible patient, consented at screening, then enrolled
    page.goto(f"{base}/studies/lavage-observational/screen")
    _screen(page, today, age="34", verdict=words["eligible"])
    page.click("#save")
    page.wait_for_url("**/subjects/LAV-0002?msg=screened")
    page.click("#enrol")
    page.wait_for_url("**/subjects/LAV-0002?msg=enrolled")

    # baseline: a branching question (organism only when the culture is positive) and errors
    page.goto(f"{base}/subjects/LAV-0002/entry/baseline/1/baseline")
    assert page.locator("#field-organism").is_hidden()
    page.fill("#f_assessment_date", today)
    page.fill("#f_height_cm", "500")
    page.fill("#f_weight_kg", "58")
    _radio(page, "side", "left")
    _radio(page, "culture", "positive")
    assert page.locator("#field-organism").is_visible()  # shown live in the browser
    _radio(page, "infection_evidence", "0")
    page.click("#save")
    page.wait_for_selector("#form-error")
    height_problem = page.locator("#field-height_cm .problem").inner_text()
    assert words["at_most"] in height_problem
    assert words["required"] in page.locator("#field-organism .problem").inner_text()
    assert page.locator("#field-infection_evidence .problem").count() == 1
    assert page.input_value("#f_height_cm") == "500"  # the draft is kept
    assert page.input_value("#f_weight_kg") == "58"
    page.screenshot(path=str(shots / f"{lang}-2-baseline-errors.png"), full_page=True)
    page.fill("#f_height_cm", "162")
    _radio(page, "organism", "staphylococcus")
    _radio(page, "infection_evidence", "1")
    assert page.locator("#f_bmi").inner_text() == "22.1"  # calc field computed live
    page.click("#save")
    page.wait_for_url("**msg=saved")
    assert words["saved"] in page.locator("#flash").inner_text()

    # a lavage session and a follow-up
    page.goto(f"{base}/subjects/LAV-0002/entry/lavage/1/lavage_session")
    page.fill("#f_session_date", today)
    page.fill("#f_session_number", "1")
    _radio(page, "procedure", "infusion")
    _radio(page, "steroid_agent", "triamcinolone")
    _radio(page, "antibiotic_added", "0")
    assert page.locator("#field-antibiotic_agent").is_hidden()
    page.click("#save")
    page.wait_for_url("**msg=saved")
    page.goto(f"{base}/subjects/LAV-0002/entry/month_1/1/follow_up")
    page.fill("#f_assessment_date", today)
    for key in ("mass", "erythema", "abscess", "fistula", "ulcer", "skin_involvement"):
        _radio(page, key, "0")
    _radio(page, "us_done", "0")
    _radio(page, "investigator_response", "cr")
    page.reload()  # e.g. signed out for inactivity and back: the unsaved entries come back
    assert page.locator("#draft-restored").is_visible()
    assert page.is_checked("input[name=f_investigator_response][value=cr]")
    page.click("#save")
    page.wait_for_url("**msg=saved")
    page.goto(f"{base}/subjects/LAV-0002")
    page.screenshot(path=str(shots / f"{lang}-3-casebook.png"), full_page=True)

    # a monitor opens a query on the baseline weight
    monitor = browser.new_context(viewport={"width": 1180, "height": 900}).new_page()  # type: ignore[attr-defined]
    _sign_in(monitor, base, "monitor", lang)
    monitor.goto(f"{base}/subjects/LAV-0002/entry/baseline/1/baseline?instance=1")
    monitor.select_option("#q-field", "weight_kg")
    monitor.fill("#q-text", "Weight differs from the clinic note; please check.")
    monitor.click("#open-query button")
    monitor.wait_for_url("**msg=query_opened")

    # the coordinator answers it
    page.goto(f"{base}/queries")
    assert "Weight differs" in page.content()
    page.goto(f"{base}/subjects/LAV-0002/entry/baseline/1/baseline?instance=1")
    page.fill("form[action$='/answer'] textarea", "Checked against source: 58 kg is right.")
    page.click("form[action$='/answer'] button")
    page.wait_for_url("**msg=query_answered")

    # an investigator signs, giving the password again (a wrong one first)
    inv = browser.new_context(viewport={"width": 1180, "height": 900}).new_page()  # type: ignore[attr-defined]
    _sign_in(inv, base, "investigator", lang)
    inv.goto(f"{base}/subjects/LAV-0002/entry/baseline/1/baseline?instance=1")
    inv.fill("#sign-password", "not the password")
    inv.click("#sign")
    inv.wait_for_selector("#sign-form .problem")
    inv.fill("#sign-password", PASSWORD)
    inv.click("#sign")
    inv.wait_for_url("**msg=signed")
    assert words["signed"] in inv.locator(".notice.signed").inner_text()
    inv.screenshot(path=str(shots / f"{lang}-4-signed.png"), full_page=True)
    ctx.close()
