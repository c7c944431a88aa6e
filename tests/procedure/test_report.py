"""Procedure report and operator log: content of the rendered PDFs, rates checked against R."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pypdf
import pytest
from sqlalchemy import Engine

from ductal import records
from ductal.db import session_scope
from ductal.errors import NotFound
from ductal.procedure import checks as checks_service
from ductal.procedure.record import save_procedure, store_image
from ductal.procedure.report import (
    is_minor,
    operator_log,
    operator_log_pdf,
    procedure_report_html,
    procedure_report_pdf,
    summarise,
)

from .conftest import FIRST, TODAY, at, checks, enrolled, procedure

FIXTURES = Path(__file__).parent / "fixtures"
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def pdf_text(content: bytes) -> tuple[int, str]:
    reader = pypdf.PdfReader(io.BytesIO(content))
    return len(reader.pages), "\n".join(page.extract_text() for page in reader.pages)


def _row(*, minor: bool = False, perforation: bool = False, grade: int = 1) -> dict[str, Any]:
    complications = ["none"]
    if minor or perforation:
        complications = ["bleeding"] + (["perforation"] if perforation else [])
    return {
        "duration_min": 10.0,
        "ducts_cannulated": 1,
        "complications": complications,
        **({"complication_grade": grade} if complications != ["none"] else {}),
    }


@pytest.mark.parametrize("case", json.loads((FIXTURES / "binom_reference.json").read_text()))
def test_rates_match_r_binom_test(case: dict[str, Any]) -> None:
    events, n, rate = case["events"], case["n"], case["rate"]
    rows = [_row(minor=True) for _ in range(events)] + [_row() for _ in range(n - events)]
    summary = summarise(
        "op", rows, limit_minutes=12, minor_benchmark=rate, perforation_benchmark=None
    )
    minor = summary.minor
    assert (minor.events, minor.n) == (events, n)
    # R binom.test values, relative tolerance 1e-9 (absolute 1e-12 at the 0 and 1 bounds)
    assert minor.lower == pytest.approx(case["lower"], rel=1e-9, abs=1e-12)
    assert minor.upper == pytest.approx(case["upper"], rel=1e-9, abs=1e-12)
    assert minor.p_value == pytest.approx(case["p_value"], rel=1e-7)
    assert minor.method == "Clopper-Pearson exact"


def test_minor_and_perforation_counting() -> None:
    assert not is_minor(_row())
    assert is_minor(_row(minor=True, grade=2))
    assert not is_minor(_row(minor=True, grade=3))
    rows = [
        _row(minor=True),
        _row(perforation=True, grade=3),
        _row(),
        {**_row(), "duration_min": 15.5, "ducts_cannulated": 3},
    ]
    s = summarise("op", rows, limit_minutes=12, minor_benchmark=0.08, perforation_benchmark=0.07)
    assert (s.sessions, s.minor.events, s.perforation.events) == (4, 1, 1)
    assert (s.duration_median, s.duration_min, s.duration_max) == (10.0, 10.0, 15.5)
    assert (s.over_limit, s.ducts_cannulated, s.ducts_mean) == (1, 6, 1.5)
    assert s.to_dict()["perforation"]["benchmark"] == 0.07


def _study_with_sessions(engine: Engine, uploads: Path) -> tuple[int, str]:
    ref = store_image(uploads, PNG)
    with session_scope(engine) as session:
        subject = enrolled(session, culture="positive", infection=1)
        checks_service.record_checks(
            session,
            subject=subject,
            data=checks(carcinoma_excluded=0),
            actor="coord",
            today=TODAY,
        )
        checks_service.override_check(
            session,
            subject=subject,
            day=FIRST,
            check="carcinoma_not_excluded",
            reason="MDT review of the core biopsy",
            actor="dr_inv",
        )
        outcome = save_procedure(
            session,
            subject=subject,
            data=procedure(
                end_time=at(FIRST, "09:14"),
                cytology_taken=1,
                image_1=ref,
                complications=["bleeding"],
                complication_grade=1,
                antibiotic_added=1,
                antibiotic_agent="gentamicin",
            ),
            actor="dr_inv",
            uploads_dir=uploads,
            today=TODAY,
        )
        second = FIRST + dt.timedelta(days=2)
        checks_service.record_checks(
            session, subject=subject, data=checks(second), actor="coord", today=TODAY
        )
        save_procedure(
            session,
            subject=subject,
            data=procedure(second, operator="dr_two", antibiotic_added=1, antibiotic_agent="x"),
            actor="dr_inv",
            today=TODAY,
        )
        return outcome.record.id, subject.study_id


def test_procedure_report_pdf_content(study: Engine, tmp_path: Path) -> None:
    record_id, study_id = _study_with_sessions(study, tmp_path / "uploads")
    with session_scope(study) as session:
        en = procedure_report_pdf(
            session, record_id=record_id, lang="en", uploads_dir=tmp_path / "uploads", today=TODAY
        )
        zh = procedure_report_pdf(
            session, record_id=record_id, lang="zh", uploads_dir=tmp_path / "uploads", today=TODAY
        )
    assert en.startswith(b"%PDF")
    pages, text = pdf_text(en)
    assert pages <= 2
    for expected in (
        "Ductoscopy procedure report",
        study_id,
        "Serial dilation",
        "09:04",
        "0.55 mm",
        "Dexamethasone",
        "Ductal inflammation",
        "Flocculent material",
        "result awaited, due 2026-02-05",
        "longer than the 12 min advised",
        "MDT review of the core biopsy",
        "Still image 1",
    ):
        assert expected in text, expected
    reader = pypdf.PdfReader(io.BytesIO(en))
    assert sum(len(page.images) for page in reader.pages) >= 1  # the still image is embedded
    _, text_zh = pdf_text(zh)
    for expected in ("乳管镜操作报告", "逐级扩张", "地塞米松", "乳管炎症", "已由研究者豁免"):
        assert expected in text_zh, expected


def test_report_shows_a_tampered_image_as_missing(study: Engine, tmp_path: Path) -> None:
    uploads = tmp_path / "uploads"
    record_id, _ = _study_with_sessions(study, uploads)
    for path in uploads.iterdir():
        path.write_bytes(b"changed")
    with session_scope(study) as session:
        html = procedure_report_html(session, record_id=record_id, uploads_dir=uploads)
    assert "cannot be shown" in html and "data:image" not in html


def test_report_needs_a_procedure_record(study: Engine, tmp_path: Path) -> None:
    _study_with_sessions(study, tmp_path / "uploads")
    with session_scope(study) as session:
        subject = records.list_subjects(session)[0]
        baseline = records.subject_records(session, subject, "baseline")[0]
        with pytest.raises(NotFound):
            procedure_report_html(session, record_id=baseline.id)
        with pytest.raises(NotFound):
            procedure_report_html(session, record_id=99999)


def test_operator_log(study: Engine, tmp_path: Path) -> None:
    _study_with_sessions(study, tmp_path / "uploads")
    with session_scope(study) as session:
        summaries, total = operator_log(session, protocol_id="lavage-observational")
        assert [(s.operator, s.sessions, s.minor.events) for s in summaries] == [
            ("dr_inv", 1, 1),
            ("dr_two", 1, 0),
        ]
        assert total is not None and (total.sessions, total.minor.events) == (2, 1)
        assert total.minor.benchmark == 0.08 and total.perforation.benchmark == 0.07
        only, _ = operator_log(session, protocol_id="lavage-observational", operator="dr_two")
        assert [s.operator for s in only] == ["dr_two"]
        content = operator_log_pdf(session, protocol_id="lavage-observational", today=TODAY)
        content_zh = operator_log_pdf(
            session, protocol_id="lavage-observational", lang="zh", today=TODAY
        )
    _, text = pdf_text(content)
    text = " ".join(text.split())  # table cells wrap
    for expected in ("Procedure log by operator", "dr_inv", "dr_two", "All operators", "1/2"):
        assert expected in text, expected
    _, text_zh = pdf_text(content_zh)
    text_zh = "".join(text_zh.split())  # Chinese wraps between any two characters
    assert "术者操作记录汇总" in text_zh and "全部术者" in text_zh
