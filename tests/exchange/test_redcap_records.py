"""REDCap records CSV: lossless round trip through the database, bad rows, partial import."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from ductal import audit, records
from ductal.db import session_scope
from ductal.errors import ValidationError
from ductal.exchange.redcap_records import (
    FIXED_COLUMNS,
    RecordsLayout,
    import_records,
    read_records,
    records_csv,
)
from ductal.exchange.report import ImportReport
from ductal.exchange.study_data import collect_subjects
from ductal.models import AuditEntry, FormRecord, Subject
from ductal.protocols.loader import builtin_protocol

from .conftest import add_cohort

TODAY = dt.date(2026, 11, 1)


def _export(engine: Engine, protocol_id: str, prefix: str | None = None) -> str:
    protocol = builtin_protocol(protocol_id)
    with session_scope(engine) as session:
        subjects = [
            s
            for s in collect_subjects(session, protocol_id)
            if prefix is None or s.study_id.startswith(prefix)
        ]
        return records_csv(protocol, subjects)


def _rename(text: str, old: str, new: str) -> str:
    return text.replace(f"\n{old}-", f"\n{new}-")


@pytest.mark.parametrize("protocol_id", ["lavage-observational", "lavage-vs-steroid-ni"])
def test_records_round_trip_loses_nothing(study: Engine, protocol_id: str) -> None:
    add_cohort(study, protocol_id, 5, seed=5)
    protocol = builtin_protocol(protocol_id)
    prefix = protocol.study_id_prefix
    original = _export(study, protocol_id)
    # import the same records under new study ids, in one transaction
    with session_scope(study) as session:
        report = import_records(
            session,
            protocol=protocol,
            text=_rename(original, prefix, "IMP"),
            actor="importer",
            today=TODAY,
        )
    assert report.errors == [] and report.imported["subjects"] == 5
    again = _export(study, protocol_id, prefix="IMP")
    assert _rename(again, "IMP", prefix) == original
    with session_scope(study) as session:
        assert audit.verify_chain(session).ok
        # written through the records service: audited under the importer's name
        creates = session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(
                AuditEntry.actor == "importer",
                AuditEntry.action == "create",
                AuditEntry.entity_type == "form_record",
            )
        )
        assert creates == report.imported["forms"]


def test_layout_follows_redcap_conventions() -> None:
    protocol = builtin_protocol("lavage-observational")
    layout = RecordsLayout(protocol)
    assert tuple(layout.header[:5]) == FIXED_COLUMNS
    assert "presentation___abscess" in layout.header
    assert "baseline_complete" in layout.header
    lavage = protocol.event("lavage")
    assert layout.event_name(lavage, 3) == "lavage_3_arm_1"
    assert layout.parse_event("lavage_3_arm_1") == (lavage, 3)
    assert layout.parse_event("month_1_arm_1") == (protocol.event("month_1"), 1)
    assert layout.parse_event("nowhere_arm_1") is None


def _cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def _join(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _corrupt(text: str) -> tuple[str, dict[str, int], set[str]]:
    """Break one value of each kind, each in another subject; return text, rows, subjects."""
    rows = _cells(text)
    col = {name: i for i, name in enumerate(rows[0])}
    breaks = [
        ("smoking", "baseline_arm_1", "smoking", "cigars"),  # outside the code list
        ("date", "screening_arm_1", "screening_date", "03/01/2017"),  # wrong date format
        ("event", "month_1_arm_1", None, "month_99_arm_1"),  # unknown event
        ("box", "baseline_arm_1", "presentation___mass", "maybe"),  # not 0 or 1
    ]
    where: dict[str, int] = {}
    used: set[str] = set()
    for name, event, column, value in breaks:
        for n, row in enumerate(rows[1:], start=2):
            if row[1] == event and row[0] not in used:
                row[col[column] if column else 1] = value
                where[name] = n
                used.add(row[0])
                break
    assert len(where) == len(breaks)
    return _join(rows), where, used


def test_bad_records_list_every_problem_and_import_nothing(study: Engine) -> None:
    add_cohort(study, "lavage-observational", 5, seed=2)
    protocol = builtin_protocol("lavage-observational")
    text, where, _ = _corrupt(_rename(_export(study, "lavage-observational"), "LAV", "IMP"))
    with session_scope(study) as session:
        before = session.scalar(select(func.count()).select_from(FormRecord))
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        import_records(session, protocol=protocol, text=text, actor="importer", today=TODAY)
    fields = [p.field for p in caught.value.problems]
    assert f"row {where['smoking']} smoking" in fields
    assert f"row {where['date']} screening_date" in fields
    assert f"row {where['event']} redcap_event_name" in fields
    assert f"row {where['box']} presentation___mass" in fields
    with session_scope(study) as session:
        assert session.scalar(select(func.count()).select_from(FormRecord)) == before
        assert (
            session.scalar(
                select(func.count()).select_from(Subject).where(Subject.study_id.like("IMP-%"))
            )
            == 0
        )


def test_partial_import_writes_the_valid_subjects(study: Engine) -> None:
    add_cohort(study, "lavage-observational", 5, seed=2)
    protocol = builtin_protocol("lavage-observational")
    text, _, broken = _corrupt(_rename(_export(study, "lavage-observational"), "LAV", "IMP"))
    with session_scope(study) as session:
        report = import_records(
            session, protocol=protocol, text=text, actor="importer", partial=True, today=TODAY
        )
    assert set(report.skipped) == broken
    assert report.imported["subjects"] == 5 - len(broken)
    with session_scope(study) as session:
        ids = {s.study_id for s in records.list_subjects(session) if s.study_id.startswith("IMP")}
        assert ids == {f"IMP-{i:04d}" for i in range(1, 6)} - broken


def test_existing_study_id_is_refused(study: Engine) -> None:
    add_cohort(study, "lavage-observational", 2, seed=4)
    protocol = builtin_protocol("lavage-observational")
    text = _export(study, "lavage-observational")
    with pytest.raises(ValidationError, match="problem") as caught, session_scope(study) as session:
        import_records(session, protocol=protocol, text=text, actor="importer", today=TODAY)
    assert any("already in use" in p.message for p in caught.value.problems)


def test_unknown_site_is_reported(study: Engine) -> None:
    add_cohort(study, "lavage-observational", 1, seed=4)
    protocol = builtin_protocol("lavage-observational")
    text = _rename(_export(study, "lavage-observational"), "LAV", "IMP")
    text = text.replace(",riv,", ",nowhere,").replace(",hill_2,", ",nowhere,")
    text = text.replace(",RIV,", ",NOWHERE,").replace(",HILL-2,", ",NOWHERE,")
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        import_records(session, protocol=protocol, text=text, actor="importer", today=TODAY)
    assert "unknown site" in str(caught.value.problems)


def _valid_text() -> str:
    """A small valid export built without a database (three subjects, every form kind)."""
    from ductal.exchange.study_data import FormData, SubjectData

    protocol = builtin_protocol("lavage-observational")
    subjects = []
    for i in range(1, 4):
        subjects.append(
            SubjectData(
                study_id=f"IMP-{i:04d}",
                site="RIV",
                status="enrolled",
                arm="lavage",
                screened_on="2018-01-02",
                enrolled_on="2018-01-03",
                forms=[
                    FormData(
                        "screening",
                        "screening",
                        {
                            "screening_date": "2018-01-02",
                            "age": 30,
                            "sex": "female",
                            "non_lactating_6m": 1,
                            "pathology_confirmed": 1,
                            "diagnosis": "igm",
                            "carcinoma_excluded": 1,
                            "consent_signed": 1,
                            "consent_date": "2018-01-02",
                        },
                    ),
                    FormData(
                        "baseline",
                        "baseline",
                        {
                            "assessment_date": "2018-01-03",
                            "side": "left",
                            "infection_evidence": 0,
                            "presentation": ["mass", "pain"],
                            "height_cm": 160.0,
                            "weight_kg": 60.0,
                            "wbc_10e9_l": 7.25,
                        },
                    ),
                    FormData(
                        "unscheduled",
                        "adverse_event",
                        {
                            "term": "pain",
                            "onset_date": "2018-01-05",
                            "ctcae_grade": 1,
                            "serious": 0,
                            "relatedness": "possible",
                        },
                        instance=2,
                    ),
                ],
            )
        )
    return records_csv(protocol, subjects)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),
            st.integers(min_value=0, max_value=400),
            st.sampled_from(
                [
                    "",
                    "x",
                    "2018-13-45",
                    "01/02/2018",
                    "-1",
                    "1e9",
                    "3",
                    "'",
                    "\n",
                    "lavage_99_arm_1",
                    "adverse_event",
                    "0",
                    "2",
                    "9",
                    ",",
                    '"',
                ]
            ),
        ),
        min_size=1,
        max_size=6,
    ),
    drop=st.booleans(),
)
def test_malformed_records_are_reported_never_crash(
    edits: list[tuple[int, int, str]], drop: bool
) -> None:
    protocol = builtin_protocol("lavage-observational")
    rows = _cells(_valid_text())
    for r, c, value in edits:
        row = rows[r % len(rows)]
        row[c % len(row)] = value
    if drop:
        rows[-1] = rows[-1][:-3]
    report = ImportReport(source="fuzz")
    subjects = read_records(protocol, _join(rows), report, today=TODAY)
    for issue in report.issues:
        assert issue.where.startswith("row ")
    for item in subjects:
        assert item.subject.study_id


def test_rule_broken_on_a_saved_form_is_reported_on_its_row(study: Engine) -> None:
    add_cohort(study, "lavage-observational", 3, seed=8)
    protocol = builtin_protocol("lavage-observational")
    rows = _cells(_rename(_export(study, "lavage-observational"), "LAV", "IMP"))
    col = {name: i for i, name in enumerate(rows[0])}
    target = next(
        n
        for n, row in enumerate(rows[1:], start=2)
        if row[1] == "screening_arm_1" and row[col["consent_signed"]] == "1"
    )
    # consent more than 30 days before screening breaks a cross-field rule of the form
    rows[target - 1][col["consent_date"]] = "2001-01-01"
    with pytest.raises(ValidationError) as caught, session_scope(study) as session:
        import_records(session, protocol=protocol, text=_join(rows), actor="importer", today=TODAY)
    problem = next(p for p in caught.value.problems if "consent" in p.message.lower())
    assert problem.field.startswith(f"row {target} ")
