"""Patient instruction sheets: key content in both languages, the name only when authorised."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from ductal import records
from ductal.db import session_scope
from ductal.errors import PermissionDenied, ValidationError
from ductal.procedure.instructions import (
    SheetDetails,
    render_instructions_html,
    render_instructions_pdf,
    site_sheet,
    subject_sheet,
)
from ductal.protocols.loader import builtin_protocol
from ductal.vault import Vault

from .conftest import TODAY, enrolled
from .test_report import pdf_text

EN_KEY = [
    "Ductoscopy and duct lavage: information for patients",
    "ask the doctor who prescribed it",
    "Do not stop it on your own",
    "do not eat or drink",
    "warm, damp towel",
    "10 to 15 minutes",
    "heavy bleeding",
    "pain that gets worse",
    "swelling",
    "redness",
    "warm",
    "pus-like",
    "+44 20 7946 0000",
    "29 January 2026",
    "5 February 2026",
    "about 12 minutes",
]
ZH_KEY = [
    "乳管镜检查及乳管冲洗：患者须知",
    "请不要自行停药",
    "禁食禁水",
    "10到15分钟",
    "出血很多",
    "疼痛越来越重",
    "乳房肿胀",
    "发红",
    "发热",
    "像脓一样",
    "+44 20 7946 0000",
    "2026年1月29日",
    "2026年2月5日",
]


@pytest.mark.parametrize(("lang", "keys"), [("en", EN_KEY), ("zh", ZH_KEY)])
def test_site_sheet_pdf(study: Engine, lang: str, keys: list[str]) -> None:
    with session_scope(study) as session:
        details = site_sheet(
            session,
            site_code="RIV",
            lang=lang,
            session_date=dt.date(2026, 1, 29),
            protocol=builtin_protocol("lavage-observational"),
        )
    assert details.patient_name is None and details.results_days == 7
    content = render_instructions_pdf(details)
    pages, text = pdf_text(content)
    assert content.startswith(b"%PDF") and pages <= 2
    flat = " ".join(text.split())
    for key in keys:
        assert key in flat or key in text.replace("\n", ""), key


def test_blank_name_line_without_a_name() -> None:
    html = render_instructions_html(SheetDetails(lang="en", site_name="Clinic"))
    assert '<span class="blank"></span>' in html
    assert "5 February" not in html  # no session date: no expected result date


def test_values_are_escaped() -> None:
    html = render_instructions_html(
        SheetDetails(lang="en", site_name='<b>"x"</b>', patient_name="<script>alert(1)</script>")
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'content: "' in html and '<b>"x"</b> ·' not in html


def test_unknown_language() -> None:
    with pytest.raises(ValidationError):
        render_instructions_html(SheetDetails(lang="fr", site_name="Clinic"))


def test_name_only_for_an_authorised_user(study: Engine, vault: Vault) -> None:
    with session_scope(study) as session:
        subject = enrolled(session)
        records.set_identity(
            session, subject=subject, identity={"name": "Mei Example"}, vault=vault, actor="coord"
        )
        default = subject_sheet(session, subject=subject, lang="zh", viewer="dr_inv", vault=vault)
        assert default.patient_name is None
        named = subject_sheet(
            session,
            subject=subject,
            lang="en",
            session_date=TODAY,
            viewer="dr_inv",
            include_name=True,
            vault=vault,
        )
        assert named.patient_name == "Mei Example"
        assert "Mei Example" in render_instructions_html(named)
        for viewer in ("coord", "nobody", None):
            with pytest.raises(PermissionDenied):
                subject_sheet(
                    session,
                    subject=subject,
                    lang="en",
                    viewer=viewer,
                    include_name=True,
                    vault=vault,
                )
