"""Endpoint derivation on small hand-made studies whose answers are worked out by hand."""

from __future__ import annotations

import datetime as dt
import math
from itertools import count
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ductal.outcomes.dataset import AnalysisData, derive, export
from ductal.outcomes.extract import (
    EVENT_COLUMNS,
    QUERY_COLUMNS,
    RECORD_COLUMNS,
    SUBJECT_COLUMNS,
    StudyExtract,
)
from ductal.protocols.loader import builtin_protocol

ENROLLED = dt.date(2019, 1, 1)
_ids = count(1)


def _day(n: int) -> str:
    return (ENROLLED + dt.timedelta(days=n)).isoformat()


def _visit(day: int, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "assessment_date": _day(day),
        "mass": 1,
        "erythema": 0,
        "abscess": 0,
        "fistula": 0,
        "ulcer": 0,
        "skin_involvement": 0,
        "us_done": 1,
        "us_size_1_mm": 30.0,
        "investigator_response": "sd",
    }
    data.update(overrides)
    return data


def _cr(day: int, **overrides: Any) -> dict[str, Any]:
    return _visit(day, mass=0, us_size_1_mm=0.0, investigator_response="cr", **overrides)


BASELINE = {"assessment_date": _day(0), "us_size_1_mm": 40.0, "presentation": ["mass"]}
VISIT_DAYS = {30: "month_1", 60: "month_2", 90: "month_3", 180: "month_6", 270: "month_9"}


class _Study:
    """Builds a StudyExtract for lavage-vs-steroid-ni from per-subject form lists."""

    def __init__(self, protocol_id: str = "lavage-vs-steroid-ni") -> None:
        self.protocol = builtin_protocol(protocol_id)
        self.subjects: list[tuple[Any, ...]] = []
        self.records: list[tuple[Any, ...]] = []
        self.events: list[tuple[Any, ...]] = []

    def add(
        self,
        study_id: str,
        *,
        arm: str = "lavage",
        status: str = "completed",
        visits: list[dict[str, Any]] | None = None,
        rescue: list[tuple[int, str]] = (),  # type: ignore[assignment]
        treated: bool = True,
        baseline: dict[str, Any] | None = BASELINE,
        screening: dict[str, Any] | None = None,
        enrolled: bool = True,
    ) -> None:
        sid = next(_ids)
        self.subjects.append(
            (sid, study_id, "RIV", arm if enrolled else None, None, status, None,
             ENROLLED, ENROLLED if enrolled else None)
        )  # fmt: skip
        scr = {"diagnosis": "igm", "age": 30, "severity_score": 7, "severity_group": "severe"}
        self._record(sid, "screening", screening or scr, "screening")
        if not enrolled:
            return
        for day, key in VISIT_DAYS.items():
            start, end = ENROLLED + dt.timedelta(day - 7), ENROLLED + dt.timedelta(day + 7)
            self.events.append((sid, key, 1, ENROLLED + dt.timedelta(day), start, end, None))
        if baseline is not None:
            self._record(sid, "baseline", baseline, "baseline")
        if treated:
            form = "lavage_session" if arm == "lavage" else "treatment_course"
            data = (
                {"session_number": 1, "procedure": "infusion"}
                if arm == "lavage"
                else {"start_date": _day(0), "regimen": "prednisolone"}
            )
            self._record(sid, form, data, "lavage" if arm == "lavage" else "treatment_start")
        for visit in visits or []:
            day = (dt.date.fromisoformat(visit["assessment_date"]) - ENROLLED).days
            key = VISIT_DAYS.get(day, "month_12")
            self._record(sid, "follow_up", visit, key, window=(day - 7, day + 7))
        for day, therapy in rescue:
            self._record(
                sid, "rescue_therapy", {"start_date": _day(day), "therapy": therapy}, "unscheduled"
            )

    def _record(
        self,
        sid: int,
        form: str,
        data: dict[str, Any],
        event: str,
        window: tuple[int, int] | None = None,
    ) -> None:
        start = ENROLLED + dt.timedelta(window[0]) if window else None
        end = ENROLLED + dt.timedelta(window[1]) if window else None
        self.records.append(
            (next(_ids), sid, form, 1, "complete", data, event, 1, None, start, end)
        )

    def derive(self) -> AnalysisData:
        extract = StudyExtract(
            protocol=self.protocol,
            subjects=pd.DataFrame(self.subjects, columns=SUBJECT_COLUMNS),
            records=pd.DataFrame(self.records, columns=RECORD_COLUMNS),
            events=pd.DataFrame(self.events, columns=EVENT_COLUMNS),
            queries=pd.DataFrame([], columns=QUERY_COLUMNS),
            extracted_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        )
        return derive(extract)


@pytest.fixture
def data() -> AnalysisData:
    study = _Study()
    study.add("CR-RELAPSE", visits=[_visit(30), _cr(90), _cr(180), _visit(270, new_abscess=1)])
    study.add("SURGERY", visits=[_visit(30), _cr(90)], rescue=[(50, "surgery")])
    study.add("CENSORED", visits=[_visit(30), _visit(90), _visit(360)])
    study.add("NO-VISIT", status="lost_to_follow_up", visits=[])
    study.add("WITHDRAWN", status="withdrawn", visits=[_visit(30)])
    study.add("LATE-CR", visits=[_visit(90), _cr(400)])
    study.add("ANTIBIOTIC", visits=[_cr(60)], rescue=[(20, "antibiotics")])
    study.add("UNTREATED", arm="steroid", treated=False, visits=[_cr(180)])
    study.add("OUT-OF-WINDOW", arm="steroid", visits=[_visit(30), _cr(60), _visit(75)])
    study.add("NOT-ENROLLED", enrolled=False)
    return study.derive()


def _row(data: AnalysisData, study_id: str) -> dict[str, Any]:
    rows = data.subjects[data.subjects["study_id"] == study_id]
    assert len(rows) == 1
    return dict(rows.iloc[0])


def test_one_row_per_enrolled_subject(data: AnalysisData) -> None:
    assert len(data.subjects) == 9
    assert "NOT-ENROLLED" not in set(data.subjects["study_id"])
    assert len(data.screening) == 10


def test_time_to_first_cr_and_relapse(data: AnalysisData) -> None:
    row = _row(data, "CR-RELAPSE")
    assert (row["status_code"], row["time_days"], row["cr_event"]) == (1, 90.0, 1)
    assert row["time_months"] == pytest.approx(90 / 30.4375)
    assert row["cr_by_horizon"] == 1
    assert (row["relapse_event"], row["relapse_days"]) == (1, 180.0)  # day 270 - day 90


def test_competing_event_before_cr(data: AnalysisData) -> None:
    row = _row(data, "SURGERY")
    assert (row["status_code"], row["time_days"], row["competing_event"]) == (2, 50.0, "surgery")
    assert row["cr_event"] == 0 and row["cr_by_horizon"] == 0
    assert math.isnan(row["relapse_days"])


def test_censored_at_last_assessment(data: AnalysisData) -> None:
    row = _row(data, "CENSORED")
    assert (row["status_code"], row["time_days"]) == (0, 360.0)
    assert row["per_protocol"]


def test_non_competing_rescue_does_not_stop_the_clock(data: AnalysisData) -> None:
    row = _row(data, "ANTIBIOTIC")
    assert (row["status_code"], row["time_days"], row["rescue_any"]) == (1, 60.0, 1)
    assert row["rescue_therapy"] == "antibiotics"
    assert (row["relapse_event"], row["relapse_days"]) == (0, 0.0)


def test_cr_after_the_horizon_window(data: AnalysisData) -> None:
    row = _row(data, "LATE-CR")
    assert data.horizon_days == 365 and data.horizon_grace_days == 30
    assert (row["cr_event"], row["time_days"], row["cr_by_horizon"]) == (1, 400.0, 0)


def test_subject_without_assessment(data: AnalysisData) -> None:
    row = _row(data, "NO-VISIT")
    assert math.isnan(row["time_days"])
    assert row["itt"] and not row["per_protocol"]
    assert "no follow-up assessment" in row["pp_exclusion"]
    assert "lost to follow-up before the primary horizon" in row["pp_exclusion"]
    kinds = {(p.study_id, p.kind) for p in data.problems}
    assert ("NO-VISIT", "no assessment") in kinds


def test_populations(data: AnalysisData) -> None:
    assert _row(data, "WITHDRAWN")["pp_exclusion"] == "withdrew consent"
    assert _row(data, "UNTREATED")["pp_exclusion"] == "allocated treatment not received"
    assert bool(data.subjects["itt"].all())
    pp = set(data.subjects.loc[data.subjects["per_protocol"], "study_id"])
    assert pp == {"CR-RELAPSE", "SURGERY", "CENSORED", "LATE-CR", "ANTIBIOTIC", "OUT-OF-WINDOW"}


def test_assessment_table_and_windows(data: AnalysisData) -> None:
    a = data.assessments
    oow = a[a["study_id"] == "OUT-OF-WINDOW"]
    assert list(oow["derived_response"]) == ["SD", "CR", "SD"]
    relapse = a[(a["study_id"] == "CR-RELAPSE") & a["relapse"]]
    assert list(relapse["day"]) == [270]
    assert list(relapse["rule"]) == ["pd_new_lesion"]
    assert set(a.columns) >= {"clinical_response", "radiological_response", "investigator_response"}


def test_out_of_window_and_missed_visits() -> None:
    study = _Study()
    study.add("LATE", visits=[_visit(30), _visit(90)])
    data = study.derive()
    # a day-90 visit recorded against a window of days 0-30
    study2 = _Study()
    study2.add("LATE", visits=[_visit(90)])
    study2.records[-1] = (*study2.records[-1][:9], ENROLLED, ENROLLED + dt.timedelta(30))
    row = _row(study2.derive(), "LATE")
    assert row["n_out_of_window"] == 1
    # scheduled month_1 and month_2 windows closed before the last visit without a record
    assert row["missed_visits"] == "month_1,month_2"
    assert _row(data, "LATE")["n_missed_visits"] == 1  # month_2 missing, month_3 done


def test_contradictions_are_reported() -> None:
    study = _Study()
    study.add("ODD", visits=[_visit(30, relapse=1), _visit(60, scar_only=1)], baseline=None)
    data = study.derive()
    details = [p.detail for p in data.problems if p.study_id == "ODD"]
    assert any("relapse recorded before any complete response" in d for d in details)
    assert any("scar only ticked" in d for d in details)
    assert any(p.kind == "no baseline" for p in data.problems)


def test_empty_study() -> None:
    data = _Study().derive()
    assert data.subjects.empty and data.assessments.empty
    assert list(data.subjects.columns)[:3] == ["study_id", "site", "arm"]


def test_export_csv_and_parquet(data: AnalysisData, tmp_path: Path) -> None:
    paths = export(data, tmp_path)
    names = sorted(p.name for p in paths)
    assert "lavage-vs-steroid-ni_subjects.parquet" in names
    back = pd.read_parquet(tmp_path / "lavage-vs-steroid-ni_subjects.parquet")
    assert list(back["study_id"]) == list(data.subjects["study_id"])
    csv = pd.read_csv(tmp_path / "lavage-vs-steroid-ni_assessments.csv")
    assert len(csv) == len(data.assessments)


@pytest.mark.parametrize(
    ("protocol_id", "therapy", "status"),
    [
        pytest.param("lavage-observational", "surgery", 2, id="obs-surgery"),
        pytest.param("lavage-observational", "systemic_steroid", 2, id="obs-systemic-steroid"),
        pytest.param("lavage-observational", "methotrexate", 2, id="obs-methotrexate"),
        pytest.param("lavage-observational", "drainage", 1, id="obs-drainage-not-competing"),
        pytest.param("lavage-vs-steroid-ni", "methotrexate", 2, id="ni-methotrexate"),
        # oral steroid is the comparator treatment in this trial, not a competing event
        pytest.param("lavage-vs-steroid-ni", "systemic_steroid", 1, id="ni-steroid-not-competing"),
        pytest.param("refractory-igm-adaptive", "surgery", 2, id="adaptive-surgery"),
        pytest.param("refractory-igm-adaptive", "methotrexate", 1, id="adaptive-mtx-is-arm-c"),
    ],
)
def test_each_competing_event(protocol_id: str, therapy: str, status: int) -> None:
    study = _Study(protocol_id)
    arm = study.protocol.arms[0].key
    study.add("S", arm=arm, visits=[_visit(30), _cr(90)], rescue=[(45, therapy)], treated=False)
    row = _row(study.derive(), "S")
    assert row["status_code"] == status
    assert row["time_days"] == (45.0 if status == 2 else 90.0)
    assert row["competing_event"] == (therapy if status == 2 else None)
    assert row["rescue_therapy"] == therapy


def test_competing_event_on_the_day_of_cr_counts_as_cr() -> None:
    study = _Study("lavage-observational")
    study.add("TIE", visits=[_cr(60)], rescue=[(60, "surgery")], treated=False)
    row = _row(study.derive(), "TIE")
    assert (row["status_code"], row["time_days"]) == (1, 60.0)
