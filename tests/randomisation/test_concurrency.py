"""Coordinators randomising at the same moment never share a slot (SQLite and PostgreSQL).

Each worker thread has its own engine (its own connections), waits at a barrier, then randomises
its subjects one transaction each, so the transactions really overlap.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select

from ductal import audit, records
from ductal.db import make_engine, session_scope
from ductal.errors import Conflict
from ductal.models import RandomisationSlot, Subject
from ductal.randomisation import service
from tests.randomisation.conftest import ADAPTIVE, MINIMISED, NI, enrolled

WORKERS = 6
PER_WORKER = 5


def _run_workers(
    database_url: str, jobs: list[list[str]], work: Callable[..., object]
) -> list[tuple[str, object]]:
    barrier = threading.Barrier(len(jobs))
    results: list[tuple[str, object]] = []
    lock = threading.Lock()

    def worker(index: int, study_ids: list[str]) -> None:
        engine = make_engine(database_url)
        try:
            barrier.wait(timeout=60)
            for study_id in study_ids:
                try:
                    with session_scope(engine) as session:
                        subject = records.get_subject(session, study_id)
                        outcome: object = work(session, subject, f"coordinator{index}")
                except Conflict as exc:
                    outcome = exc
                with lock:
                    results.append((study_id, outcome))
        finally:
            engine.dispose()

    threads = [
        threading.Thread(target=worker, args=(i, ids), daemon=True) for i, ids in enumerate(jobs)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a worker hung"
    return results


def _prepare(engine: Engine, protocol_id: str, n: int) -> list[str]:
    with session_scope(engine) as session:
        return [
            enrolled(session, protocol_id, "mild" if i % 3 else "severe").study_id for i in range(n)
        ]


@pytest.mark.parametrize("protocol_id", [NI, MINIMISED, ADAPTIVE])
def test_concurrent_coordinators_never_receive_the_same_slot(
    study: Engine, database_url: str, protocol_id: str
) -> None:
    study_ids = _prepare(study, protocol_id, WORKERS * PER_WORKER)
    with session_scope(study) as session:  # the lists exist before the race, or not: both work
        if protocol_id == NI:
            service.generate_lists(
                session, protocol_id=NI, actor="stat", role="statistician", seed=4
            )
    jobs = [study_ids[i::WORKERS] for i in range(WORKERS)]

    def randomise(session: object, subject: Subject, actor: str) -> service.Assignment:
        return service.randomise(session, subject=subject, actor=actor, seed=4)  # type: ignore[arg-type]

    results = _run_workers(database_url, jobs, randomise)

    assert len(results) == len(study_ids)
    failures = [r for _, r in results if not isinstance(r, service.Assignment)]
    assert failures == []
    with session_scope(study) as session:
        slots = session.scalars(
            select(RandomisationSlot).where(RandomisationSlot.subject_id.is_not(None))
        ).all()
        subjects = {s.id: s for s in records.list_subjects(session, protocol_id=protocol_id)}
        assert audit.verify_chain(session).ok
    # every subject has exactly one slot, every used slot one subject, arms agree
    assert len(slots) == len(study_ids)
    assert len({s.subject_id for s in slots}) == len(study_ids)
    assert len({(s.list_id, s.position) for s in slots}) == len(slots)
    for slot in slots:
        assert subjects[slot.subject_id].arm == slot.arm  # type: ignore[index]
    # slots were taken in position order: each list's used positions are 1..k
    per_list = Counter(s.list_id for s in slots)
    for list_id, count in per_list.items():
        positions = sorted(s.position for s in slots if s.list_id == list_id)
        assert positions == list(range(1, count + 1))
    reported = {sid: r for sid, r in results if isinstance(r, service.Assignment)}
    by_subject = {subjects[s.subject_id].study_id: s for s in slots}  # type: ignore[index]
    for study_id, assignment in reported.items():
        slot = by_subject[study_id]
        assert (assignment.list_id, assignment.position, assignment.arm) == (
            slot.list_id,
            slot.position,
            slot.arm,
        )


def test_two_coordinators_randomising_the_same_subject_get_one_arm_between_them(
    study: Engine, database_url: str
) -> None:
    (study_id,) = _prepare(study, NI, 1)

    def randomise(session: object, subject: Subject, actor: str) -> service.Assignment:
        return service.randomise(session, subject=subject, actor=actor)  # type: ignore[arg-type]

    results = _run_workers(database_url, [[study_id] for _ in range(4)], randomise)
    outcomes = [r for _, r in results]
    won = [r for r in outcomes if isinstance(r, service.Assignment)]
    lost = [r for r in outcomes if isinstance(r, Conflict)]
    assert len(won) == 1 and len(lost) == 3
    assert all("already randomised" in str(c) for c in lost)
    with session_scope(study) as session:
        used = session.scalars(
            select(RandomisationSlot).where(RandomisationSlot.subject_id.is_not(None))
        ).all()
        assert len(used) == 1 and used[0].arm == won[0].arm
