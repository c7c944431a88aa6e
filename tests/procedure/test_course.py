"""The lavage course: dated visits across month and year ends, deviations and adherence."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine

from ductal import forms
from ductal.db import session_scope
from ductal.procedure import checks as checks_service
from ductal.procedure.course import (
    RecordedSession,
    adherence_table,
    course_definition,
    course_status,
    match_sessions,
    plan_course,
)
from ductal.procedure.record import save_procedure
from ductal.protocols.loader import builtin_protocol

from .conftest import FIRST, TODAY, checks, enrolled, procedure

D = dt.date


def _plan(first: dt.date) -> list[tuple[int, str, dt.date, dt.date, dt.date]]:
    course, every, cycles = course_definition(builtin_protocol("lavage-observational"))
    assert (every, cycles) == (2, 7)
    return [
        (v.cycle, v.code, v.due, v.window_start, v.window_end)
        for v in plan_course(first, course, every_days=every, cycles=cycles)
    ]


def test_plan_across_a_month_end() -> None:
    plan = _plan(D(2026, 1, 29))
    assert len(plan) == 14
    assert plan[:4] == [
        (1, "infusion", D(2026, 1, 29), D(2026, 1, 29), D(2026, 1, 30)),
        (1, "massage", D(2026, 1, 30), D(2026, 1, 30), D(2026, 1, 31)),
        (2, "infusion", D(2026, 1, 31), D(2026, 1, 31), D(2026, 2, 1)),
        (2, "massage", D(2026, 2, 1), D(2026, 2, 1), D(2026, 2, 2)),
    ]
    assert plan[-1] == (7, "massage", D(2026, 2, 11), D(2026, 2, 11), D(2026, 2, 12))


def test_plan_across_a_year_end_and_a_leap_day() -> None:
    plan = _plan(D(2026, 12, 27))
    assert [p[2] for p in plan if p[1] == "infusion"] == [
        D(2026, 12, 27),
        D(2026, 12, 29),
        D(2026, 12, 31),
        D(2027, 1, 2),
        D(2027, 1, 4),
        D(2027, 1, 6),
        D(2027, 1, 8),
    ]
    leap = _plan(D(2028, 2, 24))
    assert [p[2] for p in leap if p[1] == "massage"][:3] == [
        D(2028, 2, 25),
        D(2028, 2, 27),
        D(2028, 2, 29),
    ]
    assert leap[-1][2] == D(2028, 3, 8)


def _statuses(done: list[tuple[dt.date, str]], today: dt.date) -> list[tuple[str, str]]:
    course, every, _ = course_definition(builtin_protocol("lavage-observational"))
    plan = plan_course(D(2026, 1, 29), course, every_days=every, cycles=2)
    visits, unplanned = match_sessions(
        plan, [RecordedSession(day, code) for day, code in done], today=today
    )
    assert unplanned == []
    return [(v.code, v.status) for v in visits]


def test_missed_late_early_due_and_upcoming() -> None:
    done = [(D(2026, 1, 29), "infusion"), (D(2026, 2, 1), "infusion")]
    assert _statuses(done, today=D(2026, 2, 1)) == [
        ("infusion", "on_time"),
        ("massage", "missed"),  # window 30-31 January passed without a massage
        ("infusion", "on_time"),  # 1 February is the last day of the window
        ("massage", "due"),
    ]
    assert _statuses([(D(2026, 1, 29), "infusion")], today=D(2026, 1, 29)) == [
        ("infusion", "on_time"),
        ("massage", "upcoming"),
        ("infusion", "upcoming"),
        ("massage", "upcoming"),
    ]


def test_late_and_early_sessions() -> None:
    course, every, _ = course_definition(builtin_protocol("lavage-observational"))
    plan = plan_course(D(2026, 1, 29), course, every_days=every, cycles=1)
    visits, _ = match_sessions(
        plan,
        [RecordedSession(D(2026, 2, 3), "infusion"), RecordedSession(D(2026, 1, 28), "massage")],
        today=D(2026, 2, 5),
    )
    assert [(v.status, v.days_off) for v in visits] == [("late", 5), ("early", -2)]
    assert all(v.deviation for v in visits)


def test_extra_sessions_are_unplanned() -> None:
    course, every, _ = course_definition(builtin_protocol("lavage-observational"))
    plan = plan_course(D(2026, 1, 29), course, every_days=every, cycles=1)
    extra = RecordedSession(D(2026, 1, 29), "infusion", 7)
    visits, unplanned = match_sessions(
        plan, [RecordedSession(D(2026, 1, 29), "infusion", 6), extra], today=D(2026, 1, 29)
    )
    assert visits[0].record_id == 6 and unplanned == [extra]


def _lavage(session_date: dt.date, number: int, code: str) -> dict[str, object]:
    data: dict[str, object] = {
        "session_date": session_date.isoformat(),
        "session_number": number,
        "procedure": code,
    }
    if code == "infusion":
        data.update(steroid_agent="dexamethasone", steroid_dose_mg=5, antibiotic_added=0)
    return data


@pytest.mark.parametrize("skip", [(), (3, 8)], ids=["complete", "two-missed"])
def test_course_status_and_adherence(study: Engine, skip: tuple[int, ...]) -> None:
    with session_scope(study) as session:
        subject = enrolled(session)
        checks_service.record_checks(
            session, subject=subject, data=checks(), actor="coord", today=TODAY
        )
        save_procedure(session, subject=subject, data=procedure(), actor="dr_inv", today=TODAY)
        for index in range(2, 15):
            if index in skip:
                continue
            cycle, offset = divmod(index - 1, 2)
            day = FIRST + dt.timedelta(days=2 * cycle + offset)
            code = "infusion" if offset == 0 else "massage"
            forms.save_form(
                session,
                subject=subject,
                form_key="lavage_session",
                data=_lavage(day, index, code),
                actor="coord",
                event_key="lavage",
                event_instance=cycle + 1,
                today=TODAY,
            )
        status = course_status(session, subject=subject, today=TODAY)
        assert status.first_session == FIRST
        assert len(status.visits) == 14 and status.unplanned == []
        assert status.count("missed") == len(skip)
        assert status.deviations == len(skip)
        assert status.due_so_far == 14
        assert status.adherence == pytest.approx((14 - len(skip)) / 14)
        missed = [(v.cycle, v.code) for v in status.visits if v.status == "missed"]
        assert missed == [((i - 1) // 2 + 1, "infusion" if i % 2 else "massage") for i in skip]
        rows = adherence_table(session, subjects=[subject], today=TODAY)
        assert [(r["study_id"], r["missed"], r["on_time"]) for r in rows] == [
            (subject.study_id, len(skip), 14 - len(skip))
        ]


def test_no_course_before_the_first_session(study: Engine) -> None:
    with session_scope(study) as session:
        subject = enrolled(session)
        status = course_status(session, subject=subject, today=TODAY)
        assert status.first_session is None and status.visits == [] and status.adherence is None
        assert adherence_table(session, subjects=[subject], today=TODAY) == []
