"""SAS, SPSS, Stata and R-ready CSV: values, variable labels and value labels read back."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from ductal.exchange.statpackages import Codebook, form_tables, write_tables
from ductal.protocols.loader import builtin_protocol

from .test_odm import _subject


def _tables(wide: bool = False) -> dict[str, tuple[pd.DataFrame, Codebook]]:
    second = _subject()
    second.study_id = "IMP-0002"
    second.forms[1].data["side"] = "bilateral"
    second.forms[1].data["presentation"] = ["abscess"]
    return form_tables(builtin_protocol("lavage-observational"), [_subject(), second], wide=wide)


def test_tidy_tables_are_keyed_by_subject_event_and_instance() -> None:
    tables = _tables()
    baseline, book = tables["baseline"]
    assert list(baseline.columns[:6]) == [
        "study_id",
        "site",
        "arm",
        "event",
        "event_instance",
        "instance",
    ]
    assert list(baseline["study_id"]) == ["IMP-0001", "IMP-0002"]
    assert list(baseline["side"]) == [1, 3]
    assert book.value_labels["side"] == {1: "Left", 2: "Right", 3: "Bilateral"}
    assert book.codes["side"][3] == "bilateral"
    assert list(baseline["presentation__abscess"]) == [0, 1]
    assert baseline["assessment_date"].iloc[0] == dt.date(2018, 1, 3)
    lavage, _ = tables["lavage_session"]
    assert lavage[["event", "event_instance", "instance"]].iloc[0].tolist() == ["lavage", 2, 2]


def test_stata_file_reads_back_with_pandas_own_reader(tmp_path: Path) -> None:
    write_tables(_tables(), tmp_path, "stata")
    reader = pd.io.stata.StataReader(tmp_path / "baseline.dta")
    with reader:
        frame = reader.read(convert_categoricals=True)
        labels = reader.variable_labels()
    assert list(frame["side"]) == ["Left", "Bilateral"]
    assert labels["side"] == "Affected side"
    assert labels["height_cm"] == "Height (cm)"
    assert frame["height_cm"].tolist() == [160.0, 160.0]


def test_spss_file_keeps_labels(tmp_path: Path) -> None:
    write_tables(_tables(), tmp_path, "spss")
    frame, meta = pyreadstat.read_sav(tmp_path / "baseline.sav")
    assert meta.column_names_to_labels["crp_mg_l"] == "C-reactive protein (mg/L)"
    assert meta.variable_value_labels["side"] == {1.0: "Left", 2.0: "Right", 3.0: "Bilateral"}
    assert frame["wbc_10e9_l"].tolist() == [7.25, 7.25]
    assert frame["assessment_date"].iloc[0] == dt.date(2018, 1, 3)


def test_sas_transport_and_formats_program(tmp_path: Path) -> None:
    paths = write_tables(_tables(), tmp_path, "sas")
    assert tmp_path / "formats.sas" in paths
    frame, meta = pyreadstat.read_xport(tmp_path / "baseline.xpt")
    assert meta.column_names_to_labels["side"] == "Affected side"
    assert frame["side"].tolist() == [1.0, 3.0]
    program = (tmp_path / "formats.sas").read_text()
    assert "proc format;" in program
    assert "1='Left' 2='Right' 3='Bilateral'" in program
    assert "data baseline; set baseline; format" in program


def test_r_csv_keeps_codes_and_has_a_codebook(tmp_path: Path) -> None:
    write_tables(_tables(), tmp_path, "csv")
    frame = pd.read_csv(tmp_path / "baseline.csv")
    assert frame["side"].tolist() == ["left", "bilateral"]
    with (tmp_path / "baseline_codebook.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    side = [r for r in rows if r["variable"] == "side"]
    assert [(r["value"], r["value_label"]) for r in side] == [
        ("left", "Left"),
        ("right", "Right"),
        ("bilateral", "Bilateral"),
    ]


@pytest.mark.parametrize("fmt", ["sas", "spss", "stata", "csv"])
def test_wide_tables_have_one_row_per_subject(tmp_path: Path, fmt: str) -> None:
    tables = _tables(wide=True)
    baseline, book = tables["baseline"]
    assert len(baseline) == 2 and "side_baseline_1_1" in baseline.columns
    assert book.value_labels["side_baseline_1_1"][3] == "Bilateral"
    paths = write_tables(tables, tmp_path, fmt)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_any_dataframe_with_a_codebook_can_be_written(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "study_id": ["A", "B"],
            "arm": [1, 2],
            "time_to_cr_months": [2.5, None],
            "cr": [True, False],
        }
    )
    book = Codebook(
        label="analysis",
        variable_labels={"time_to_cr_months": "Time to CR"},
        value_labels={"arm": {1: "Lavage", 2: "Steroid"}},
    )
    write_tables({"analysis": (frame, book)}, tmp_path, "stata")
    reader = pd.io.stata.StataReader(tmp_path / "analysis.dta")
    with reader:
        back = reader.read(convert_categoricals=True)
    assert back["arm"].tolist() == ["Lavage", "Steroid"]
    assert back["cr"].tolist() == [1.0, 0.0]


FIXTURE = Path(__file__).parent / "fixtures" / "haven_baseline.json"


def _plain(value: object) -> object:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()[:10]
    if isinstance(value, float):
        return None if value != value else value  # NaN is missing
    return value


@pytest.mark.parametrize(
    ("fmt", "reader", "name"),
    [
        pytest.param("stata", pyreadstat.read_dta, "baseline.dta", id="stata"),
        pytest.param("spss", pyreadstat.read_sav, "baseline.sav", id="spss"),
        pytest.param("sas", pyreadstat.read_xport, "baseline.xpt", id="sas"),
    ],
)
def test_files_read_as_r_haven_reads_them(
    tmp_path: Path, fmt: str, reader: object, name: str
) -> None:
    """R's haven (tests/exchange/r/read_stat_exports.R) saw these values and labels."""
    import json

    expected = json.loads(FIXTURE.read_text())[fmt]
    write_tables(_tables(), tmp_path, fmt)  # type: ignore[arg-type]
    frame, meta = reader(tmp_path / name)  # type: ignore[operator]
    assert list(frame.columns) == list(expected)
    for column, seen in expected.items():
        assert meta.column_names_to_labels[column] == seen["label"], column
        ours = [_plain(v) for v in frame[column]]
        theirs = seen["values"]
        if any(isinstance(v, float) for v in ours):
            assert ours == pytest.approx(theirs, rel=1e-12, abs=0), column
        else:
            assert ours == [t if t != "" else None for t in theirs] or ours == theirs, column
        labels = {float(k): v for k, v in (seen["value_labels"] or {}).items()}
        assert meta.variable_value_labels.get(column, {}) == labels, column
