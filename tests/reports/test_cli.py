"""``ductal report``, ``ductal dataset export`` and ``ductal outcomes classify`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import create_engine

from ductal import accounts, records
from ductal.cli import main
from ductal.db import session_scope
from ductal.protocols.loader import builtin_protocols
from ductal.synthetic import generate_cohort


@pytest.fixture
def cohort(env: dict[str, str]) -> dict[str, str]:
    engine = create_engine(env["DUCTAL_DATABASE_URL"])
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="setup")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="setup")
        generate_cohort(
            session,
            protocol_id="lavage-observational",
            n_subjects=10,
            rng=np.random.default_rng(11),
            sites=[site],
        )
    engine.dispose()
    return env


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    try:
        main(list(argv))
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


def test_report_command(
    cohort: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(
        capsys, "report", "-p", "lavage-observational", "--out", str(tmp_path), "--no-pdf", "--json"
    )
    payload = json.loads(out)
    assert payload["protocols"] == ["lavage-observational"]
    assert payload["pdf"] is None and Path(payload["html"]).exists()
    assert set(payload["timings_seconds"]) >= {"extract", "derive", "statistics", "figures"}


def test_dataset_export_and_classify(
    cohort: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "dataset", "export", "-p", "lavage-observational", "--out", str(tmp_path))
    paths = out.split()
    assert len(paths) == 6
    subjects = pd.read_parquet(tmp_path / "lavage-observational_subjects.parquet")
    assert {"time_months", "cr_event", "per_protocol", "pp_exclusion"} <= set(subjects.columns)
    first = json.loads(_run(capsys, "outcomes", "classify", "-p", "lavage-observational", "--json"))
    again = json.loads(_run(capsys, "outcomes", "classify", "-p", "lavage-observational", "--json"))
    assert first[0]["queries_opened"] == first[0]["disagreements"]
    assert again[0]["queries_opened"] == 0
    assert again[0]["queries_already_open"] == first[0]["disagreements"]


def test_report_on_an_empty_database(
    env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(capsys, "report", "--out", str(tmp_path), "--no-pdf")
    assert "report:" in out
    assert "no registered protocol" in (tmp_path / "report.html").read_text()
