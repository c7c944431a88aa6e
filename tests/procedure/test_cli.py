"""``ductal procedure`` end to end: checklist, record, report, instructions, pending, course."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from ductal.cli import main
from ductal.db import session_scope

from .conftest import FIRST, at, checks, enrolled, procedure
from .test_report import PNG, pdf_text


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _write(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_checklist_of_the_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "procedure", "checklist", "--json")
    assert code == 0
    payload = json.loads(out)
    assert [s["field"] for s in payload["steps"]][:2] == ["step_cleanse_at", "step_massage_at"]
    assert "carcinoma_not_excluded" in {c["key"] for c in payload["checks"]}
    code, out, _ = run(capsys, "procedure", "checklist", "--lang", "zh")
    assert code == 0 and "清洁乳头并去除角栓" in out


def test_blank_site_sheet(
    study: Engine, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "sheet.pdf"
    code, _, err = run(capsys, "procedure", "instructions", "--lang", "zh", "--out", str(out_file))
    assert code == 0, err
    pages, text = pdf_text(out_file.read_bytes())
    assert pages <= 2 and "+44 20 7946 0000" in text and "患者须知" in text
    code, _, err = run(
        capsys, "procedure", "instructions", "--out", str(tmp_path / "x.pdf"), "--with-name"
    )
    assert code == 1 and "needs --subject" in err


def test_session_workflow(
    study: Engine, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with session_scope(study) as session:
        study_id = enrolled(session).study_id
    checks_file = _write(tmp_path / "checks.json", checks(carcinoma_excluded=0))
    code, out, _ = run(
        capsys, "procedure", "checklist", "-s", study_id, "-f", checks_file, "--actor", "coord"
    )
    assert code == 0 and "may NOT start" in out and "carcinoma_not_excluded" in out

    proc_file = _write(tmp_path / "proc.json", procedure(cytology_taken=1))
    code, _, err = run(capsys, "procedure", "record", study_id, "-f", proc_file, "--actor", "x")
    assert code == 1 and err.startswith("error: session for") and "carcinoma_not_excluded" in err

    override = ["procedure", "override", study_id, "--check", "carcinoma_not_excluded"]
    override += ["--reason", "MDT: benign", "--date", FIRST.isoformat()]
    code, _, err = run(capsys, *override, "--actor", "coord")
    assert code == 1 and "only an investigator" in err
    code, out, _ = run(capsys, *override, "--actor", "dr_inv")
    assert code == 0 and "may start" in out

    bad_file = _write(tmp_path / "bad.json", procedure(end_time=at(FIRST, "08:00")))
    code, _, err = run(capsys, "procedure", "record", study_id, "-f", bad_file)
    assert code == 1
    assert err.splitlines() == [
        "error: procedure record has 1 problem(s)",
        "  - end_time: The end time is not after the start time",
    ]

    image = tmp_path / "still.png"
    image.write_bytes(PNG)
    code, out, err = run(
        capsys,
        "procedure",
        "record",
        study_id,
        "-f",
        proc_file,
        "--image",
        str(image),
        "--actor",
        "dr_inv",
        "--json",
    )
    assert code == 0, err
    saved = json.loads(out)
    assert saved["pending_results"][0]["due"] == "2026-02-05"
    record_id = saved["record_id"]
    uploads = Path(env["DUCTAL_DATA_DIR"]) / "uploads"
    assert len(list(uploads.iterdir())) == 1

    report_file = tmp_path / "report.pdf"
    code, _, err = run(
        capsys, "procedure", "report", "--record", str(record_id), "--out", str(report_file)
    )
    assert code == 0, err
    assert study_id in pdf_text(report_file.read_bytes())[1]
    log_file = tmp_path / "log.html"
    code, _, _ = run(capsys, "procedure", "report", "--log", "--out", str(log_file))
    assert code == 0 and "dr_inv" in log_file.read_text()
    code, _, err = run(capsys, "procedure", "report", "--out", str(log_file))
    assert code == 1 and "--record" in err

    code, out, _ = run(capsys, "procedure", "pending", "--today", "2026-02-08", "--overdue")
    assert code == 0 and "OVERDUE 3 d" in out and "1 result(s)" in out
    result_file = _write(tmp_path / "res.json", {"result_date": "2026-02-04", "result": "benign"})
    code, out, _ = run(
        capsys, "procedure", "result", study_id, "--instance", "1", "-f", result_file
    )
    assert code == 0 and "FLAGGED" not in out
    code, out, _ = run(capsys, "procedure", "pending", "--json")
    assert code == 0 and json.loads(out) == []

    code, out, _ = run(capsys, "procedure", "course", study_id, "--today", "2026-02-20", "--json")
    status = json.loads(out)
    assert code == 0 and status["first_session"] == "2026-01-29"
    assert (status["on_time"], status["missed"], status["deviations"]) == (1, 13, 13)
