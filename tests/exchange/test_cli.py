"""``ductal export`` / ``ductal import`` end to end, and no identifier in any export format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine

from ductal import forms, records
from ductal.cli import main
from ductal.db import session_scope

from .conftest import SYNTHETIC_NAME

FORMATS = ["redcap", "odm", "fhir", "sas", "spss", "stata", "csv"]


def _run(args: list[str]) -> None:
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code in (0, None), f"ductal {' '.join(args)} exited {exc.code}"


def _export(fmt: str, out: Path, *extra: str) -> Path:
    target = out / ("study.xml" if fmt == "odm" else fmt)
    _run(["export", fmt, "--protocol", "lavage-observational", "--out", str(target), *extra])
    return target


def _all_bytes(path: Path) -> bytes:
    if path.is_file():
        return path.read_bytes() + path.with_name(path.stem + ".manifest.json").read_bytes()
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def _add_free_text_with_the_name(engine: Engine) -> None:
    with session_scope(engine) as session:
        subject = next(
            s
            for s in records.list_subjects(session, protocol_id="lavage-observational")
            if s.status in ("enrolled", "completed")
        )
        forms.save_form(
            session,
            subject=subject,
            form_key="adverse_event",
            event_key="unscheduled",
            data={
                "term": f"bruise noticed by {SYNTHETIC_NAME}",
                "onset_date": "2018-05-01",
                "ctcae_grade": 1,
                "serious": 0,
                "relatedness": "unlikely",
            },
            actor="coord",
        )


def test_no_export_format_contains_an_identifier(
    cohort: Engine, env: dict[str, str], tmp_path: Path
) -> None:
    needles = [SYNTHETIC_NAME.encode(), b"SYN7654321", b"1985-04-03"]
    for fmt in FORMATS:
        blob = _all_bytes(_export(fmt, tmp_path / "default"))
        for needle in needles:
            assert needle not in blob, (fmt, needle)
    # the grep can find the name when it is there: typed into a free-text answer ...
    _add_free_text_with_the_name(cohort)
    assert SYNTHETIC_NAME.encode() in _all_bytes(_export("redcap", tmp_path / "typed"))
    # ... and --drop-free-text removes it from every format
    for fmt in FORMATS:
        blob = _all_bytes(_export(fmt, tmp_path / "dropped", "--drop-free-text"))
        assert SYNTHETIC_NAME.encode() not in blob, fmt


def test_hashed_ids_and_shifted_dates_are_in_the_manifest(
    cohort: Engine, env: dict[str, str], tmp_path: Path
) -> None:
    folder = _export("redcap", tmp_path, "--hash-ids", "--shift-dates")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "HMAC" in manifest["deidentification"]["study_ids"]
    assert "offset" in manifest["deidentification"]["dates"]
    assert manifest["deidentification"]["dates_shifted"] > 0
    assert {f["path"] for f in manifest["files"]} == {"data_dictionary.csv", "records.csv"}
    text = (folder / "records.csv").read_text()
    assert "LAV-0" not in text


def test_redcap_export_imports_back_through_the_cli(
    cohort: Engine, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _export("redcap", tmp_path)
    records_path = folder / "records.csv"
    records_path.write_text(records_path.read_text().replace("\nLAV-", "\nCLI-"))
    _run(
        [
            "import",
            "redcap",
            "--records",
            str(records_path),
            "--protocol",
            "lavage-observational",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{") :])
    assert report["ok"] and report["imported"]["subjects"] == 6
    with session_scope(cohort) as session:
        ids = [s.study_id for s in records.list_subjects(session) if s.study_id.startswith("CLI")]
    assert len(ids) == 6


def test_bad_import_exits_with_the_problems(
    cohort: Engine, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _export("redcap", tmp_path)
    records_path = folder / "records.csv"
    records_path.write_text(
        records_path.read_text().replace("\nLAV-", "\nBAD-").replace(",female,", ",robot,")
    )
    with pytest.raises(SystemExit) as caught:
        main(
            [
                "import",
                "redcap",
                "--records",
                str(records_path),
                "--protocol",
                "lavage-observational",
            ]
        )
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert "nothing was imported" in err and "'robot' is not one of" in err


def test_odm_export_imports_back(
    cohort: Engine, env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _export("odm", tmp_path, "--audit")
    path.write_text(path.read_text().replace('SubjectKey="LAV-', 'SubjectKey="ODM-'))
    _run(["import", "odm", str(path), "--protocol", "lavage-observational"])
    assert "imported into lavage-observational: 6 subjects" in capsys.readouterr().out


def test_analysis_dataset_exports(cohort: Engine, env: dict[str, str], tmp_path: Path) -> None:
    folder = _export("stata", tmp_path, "--dataset", "analysis")
    assert (folder / "subjects.dta").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["subjects"] >= 1
