"""Randomisations per second, one coordinator versus several at once, side by side in one run.

Run: .venv/bin/python benchmarks/randomisation_throughput.py
     (set DUCTAL_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres to add
     PostgreSQL; a scratch database ``ductal_bench_rand`` is created and dropped there)
Prints: for each database, randomisations per second with 1 worker and with 4 concurrent workers
(each its own engine), the ratio, and a check that no slot was used twice. Assignments are
serialised by design (one audit chain, one list head), so concurrency should cost little and
buy little: the ratio shows the price of the locking.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from ductal import accounts, records
from ductal.db import make_engine, migrate, session_scope
from ductal.models import RandomisationSlot
from ductal.protocols.loader import builtin_protocol
from ductal.randomisation import randomise

PROTOCOL = "lavage-vs-steroid-ni"
N = 80


def _screening(i: int) -> dict[str, object]:
    severe = i % 3 == 0
    return {
        "screening_date": "2019-01-07",
        "age": 33,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2019-01-07",
        "severity_score": 8 if severe else 3,
        "severity_group": "severe" if severe else "mild",
    }


def _prepare(engine: Engine) -> list[str]:
    with session_scope(engine) as session:
        records.register_protocol(session, protocol=builtin_protocol(PROTOCOL), actor="bench")
        site = accounts.create_site(session, code="B1", name="Bench", actor="bench")
        ids = []
        for i in range(N):
            s = records.screen(
                session, protocol_id=PROTOCOL, site=site, screening=_screening(i), actor="bench"
            )
            records.enrol(session, subject=s, actor="bench", enrolled_on=dt.date(2019, 1, 8))
            ids.append(s.study_id)
    return ids


def _run(url: str, ids: list[str], workers: int) -> float:
    jobs = [ids[i::workers] for i in range(workers)]
    barrier = threading.Barrier(workers)

    def work(chunk: list[str]) -> None:
        engine = make_engine(url)
        barrier.wait()
        for study_id in chunk:
            with session_scope(engine) as session:
                randomise(session, subject=records.get_subject(session, study_id), actor="b")
        engine.dispose()

    threads = [threading.Thread(target=work, args=(chunk,)) for chunk in jobs]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(ids) / (time.perf_counter() - start)


def bench(label: str, make_url_for: dict[str, str]) -> None:
    rates = {}
    for workers, url in make_url_for.items():
        engine = make_engine(url)
        migrate(engine)
        ids = _prepare(engine)
        rates[workers] = _run(url, ids, int(workers))
        with session_scope(engine) as session:
            used = session.scalar(
                select(func.count(func.distinct(RandomisationSlot.subject_id))).where(
                    RandomisationSlot.subject_id.is_not(None)
                )
            )
            slots = session.scalar(
                select(func.count()).where(RandomisationSlot.subject_id.is_not(None))
            )
        engine.dispose()
        assert used == slots == N, (used, slots)
    one, four = rates["1"], rates["4"]
    print(
        f"{label:<11} 1 worker {one:6.1f}/s   4 workers {four:6.1f}/s   "
        f"ratio 4:1 = {four / one:4.2f}   ({N} subjects each, no slot used twice)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench(
            "SQLite",
            {w: f"sqlite:///{Path(tmp) / f'bench{w}.sqlite'}" for w in ("1", "4")},
        )
    pg = os.environ.get("DUCTAL_BENCH_POSTGRES_URL", "").strip()
    if not pg:
        print("PostgreSQL  skipped (set DUCTAL_BENCH_POSTGRES_URL)")
        return
    admin = create_engine(make_url(pg).set(database="postgres"), isolation_level="AUTOCOMMIT")
    names = {w: f"ductal_bench_rand_{w}" for w in ("1", "4")}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        bench(
            "PostgreSQL",
            {w: make_url(pg).set(database=n).render_as_string(False) for w, n in names.items()},
        )
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
