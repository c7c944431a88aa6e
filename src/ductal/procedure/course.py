"""The lavage course: planned visits from the first session, deviations and adherence.

The protocol's course (``settings.procedure.course``) is a cycle of visits — infusion on day 0,
massage on day 1 — repeated as the treatment event repeats (every 2 days, 7 times: about two
weeks). From the first session the cycles become dated visits with windows; each recorded
session is matched to the visit it serves, and a visit is on time, early, late, missed (its
window has passed with no session), due (today is in its window) or upcoming. Early, late and
missed visits are protocol deviations.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from ductal import audit, records
from ductal.errors import ProtocolError
from ductal.models import Event, Subject
from ductal.procedure.rules import procedure_settings
from ductal.protocols.model import LavageCourse, Protocol

DEVIATIONS = ("early", "late", "missed")


@dataclass(frozen=True)
class Visit:
    """One planned visit of the course and what happened to it."""

    cycle: int
    code: str
    due: dt.date
    window_start: dt.date
    window_end: dt.date
    status: str = "upcoming"
    done_on: dt.date | None = None
    record_id: int | None = None

    @property
    def deviation(self) -> bool:
        return self.status in DEVIATIONS

    @property
    def days_off(self) -> int | None:
        """Days the session was after (+) or before (−) its due date."""
        return None if self.done_on is None else (self.done_on - self.due).days

    def to_dict(self) -> dict[str, Any]:
        return {
            "cycle": self.cycle,
            "code": self.code,
            "due": self.due.isoformat(),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "status": self.status,
            "done_on": self.done_on.isoformat() if self.done_on else None,
            "days_off": self.days_off,
            "record_id": self.record_id,
        }


@dataclass(frozen=True)
class RecordedSession:
    """A recorded session: its date, the course code it did, and its record."""

    day: dt.date
    code: str
    record_id: int | None = None


@dataclass(frozen=True)
class CourseStatus:
    """A subject's course: every planned visit, the sessions that fit none, and the counts."""

    study_id: str
    first_session: dt.date | None
    visits: list[Visit]
    unplanned: list[RecordedSession] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for v in self.visits if v.status == status)

    @property
    def deviations(self) -> int:
        return sum(1 for v in self.visits if v.deviation)

    @property
    def due_so_far(self) -> int:
        """Visits whose window has closed or that were done: the adherence denominator."""
        return sum(1 for v in self.visits if v.status not in ("upcoming", "due"))

    @property
    def adherence(self) -> float | None:
        """Share of the visits due so far that were done in their window (None before any)."""
        n = self.due_so_far
        return None if n == 0 else self.count("on_time") / n

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_id": self.study_id,
            "first_session": self.first_session.isoformat() if self.first_session else None,
            "visits": [v.to_dict() for v in self.visits],
            "unplanned": [
                {"day": s.day.isoformat(), "code": s.code, "record_id": s.record_id}
                for s in self.unplanned
            ],
            "on_time": self.count("on_time"),
            "early": self.count("early"),
            "late": self.count("late"),
            "missed": self.count("missed"),
            "deviations": self.deviations,
            "due_so_far": self.due_so_far,
            "adherence": self.adherence,
        }


def course_definition(protocol: Protocol) -> tuple[LavageCourse, int, int]:
    """Return the protocol's course, the days between cycles and the number of cycles."""
    course = procedure_settings(protocol).course
    if course is None:
        raise ProtocolError(f"protocol {protocol.id} defines no lavage course")
    spec = protocol.event(course.event)
    every = spec.repeat.every_days if spec.repeat else 1
    cycles = spec.repeat.count if spec.repeat else 1
    return course, every, cycles


def plan_course(
    first_session: dt.date, course: LavageCourse, *, every_days: int, cycles: int
) -> list[Visit]:
    """Return the dated visits of a course that starts on ``first_session`` (pure)."""
    visits: list[Visit] = []
    for cycle in range(1, cycles + 1):
        start = first_session + dt.timedelta(days=(cycle - 1) * every_days)
        for step in course.steps:
            due = start + dt.timedelta(days=step.day)
            visits.append(
                Visit(
                    cycle=cycle,
                    code=step.code,
                    due=due,
                    window_start=due - dt.timedelta(days=step.window_before),
                    window_end=due + dt.timedelta(days=step.window_after),
                )
            )
    return visits


def match_sessions(
    plan: Sequence[Visit], sessions: Iterable[RecordedSession], *, today: dt.date
) -> tuple[list[Visit], list[RecordedSession]]:
    """Return the plan with each visit's status, and the sessions that matched no visit (pure).

    Sessions are taken in date order; each goes to the earliest still-open visit of its code
    whose window it is in, else to the earliest open visit of its code due before the next one
    (late) or the first open one (early). A visit with no session is missed once its window has
    passed, due while today is in it, upcoming before.
    """
    visits = list(plan)
    used: set[int] = set()
    unplanned: list[RecordedSession] = []
    for done in sorted(sessions, key=lambda s: (s.day, s.record_id or 0)):
        candidates = [i for i, v in enumerate(visits) if v.code == done.code and i not in used]
        if not candidates:
            unplanned.append(done)
            continue
        inside = [
            i for i in candidates if visits[i].window_start <= done.day <= visits[i].window_end
        ]
        before = [i for i in candidates if visits[i].window_end < done.day]
        if inside:
            index = inside[0]
            status = "on_time"
        elif before:
            # late for the last visit whose window has passed, not for one long gone
            index = before[-1]
            status = "late"
        else:
            index = candidates[0]
            status = "early"
        used.add(index)
        visits[index] = replace(
            visits[index], status=status, done_on=done.day, record_id=done.record_id
        )
    for i, visit in enumerate(visits):
        if i in used:
            continue
        if visit.window_end < today:
            status = "missed"
        elif visit.window_start <= today:
            status = "due"
        else:
            status = "upcoming"
        visits[i] = replace(visit, status=status)
    return visits, unplanned


def recorded_sessions(session: Session, subject: Subject) -> list[RecordedSession]:
    """Return the subject's recorded course sessions (lavage session and ductoscopy records)."""
    protocol = records.subject_protocol(subject)
    settings = procedure_settings(protocol)
    course = settings.course
    if course is None:
        return []
    out: list[RecordedSession] = []
    for r in records.subject_records(session, subject, course.form):
        day, code = r.data.get(course.date_field), r.data.get(course.field)
        if day and code:
            out.append(RecordedSession(dt.date.fromisoformat(day), str(code), r.id))
    # a ductoscopy with lavage is the infusion of its cycle, unless a lavage record says so too
    first_code = course.steps[0].code
    seen = {(s.day, s.code) for s in out}
    for r in records.subject_records(session, subject, settings.record_form):
        day = r.data.get("procedure_date")
        if day and (dt.date.fromisoformat(day), first_code) not in seen:
            out.append(RecordedSession(dt.date.fromisoformat(day), first_code, r.id))
    return sorted(out, key=lambda s: (s.day, s.record_id or 0))


def course_status(session: Session, *, subject: Subject, today: dt.date) -> CourseStatus:
    """Return the subject's course: visits with status, deviations and adherence."""
    protocol = records.subject_protocol(subject)
    course, every, cycles = course_definition(protocol)
    done = recorded_sessions(session, subject)
    firsts = [s.day for s in done if s.code == course.steps[0].code]
    if not firsts:
        return CourseStatus(subject.study_id, None, [], done)
    first = min(firsts)
    plan = plan_course(first, course, every_days=every, cycles=cycles)
    visits, unplanned = match_sessions(plan, done, today=today)
    return CourseStatus(subject.study_id, first, visits, unplanned)


def schedule_course(
    session: Session, *, subject: Subject, first_session: dt.date, actor: str
) -> list[tuple[int, dt.date]]:
    """Date the subject's treatment events from the first session; return (instance, date) pairs.

    The treatment event's instances get the course's cycle dates with the event's windows; only
    changed dates are written, in one audited ``reschedule`` entry.
    """
    protocol = records.subject_protocol(subject)
    course, every, cycles = course_definition(protocol)
    spec = protocol.event(course.event)
    if spec.arms and subject.arm not in spec.arms:
        return []
    events = {
        e.instance: e for e in records.subject_events(session, subject) if e.event_key == spec.key
    }
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    planned: list[tuple[int, dt.date]] = []
    for instance in range(1, cycles + 1):
        day = first_session + dt.timedelta(days=(instance - 1) * every)
        planned.append((instance, day))
        event = events.get(instance)
        if event is None:
            event = Event(subject_id=subject.id, event_key=spec.key, instance=instance)
            session.add(event)
        elif event.scheduled_on == day:
            continue
        label = f"{spec.key}#{instance}"
        before[label] = event.scheduled_on
        event.scheduled_on = day
        event.window_start = day - dt.timedelta(days=spec.window_before)
        event.window_end = day + dt.timedelta(days=spec.window_after)
        if event.status is None:
            event.status = "scheduled"
        after[label] = day
    session.flush()
    if after:
        audit.record(
            session,
            actor=actor,
            action="reschedule",
            entity_type="subject",
            entity_id=subject.id,
            before=before,
            after=after,
            reason=f"lavage course dated from the first session on {first_session.isoformat()}",
            subject_study_id=subject.study_id,
            site_id=subject.site_id,
        )
    return planned


def adherence_table(
    session: Session, *, subjects: Iterable[Subject], today: dt.date
) -> list[dict[str, Any]]:
    """Return one row per subject with a course: visits done on time, deviations, adherence."""
    rows: list[dict[str, Any]] = []
    for subject in subjects:
        try:
            status = course_status(session, subject=subject, today=today)
        except ProtocolError:
            continue
        if status.first_session is None:
            continue
        row = status.to_dict()
        row.pop("visits")
        row.pop("unplanned")
        rows.append(row)
    return rows
