"""Load: ``ductal serve`` (uvicorn, several workers) on SQLite and PostgreSQL under many clients.

Run: .venv/bin/python benchmarks/load_web.py [--seconds 30] [--clients 32] [--workers 4]
     [--backend sqlite|postgresql|both]
     PostgreSQL: a scratch database ``ductal_load_<pid>`` on 127.0.0.1:5432 (user postgres,
     override with DUCTAL_BENCH_POSTGRES_URL; only 127.0.0.1/localhost is accepted), dropped after.
Prints per database: requests, throughput, p50/p95/p99 latency overall and per operation, errors
by type, then the checks: every acknowledged write stored exactly once at its acknowledged
version, no version read or saved going backwards, no randomisation slot told twice, every form
record matching its audit entries, the audit chain verifying. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.trust import loadgen

from ductal.db import make_engine

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
LOCAL = {"127.0.0.1", "localhost", "::1"}


@contextmanager
def scratch_postgres(name: str) -> Iterator[str]:
    """Yield the URL of a new empty PostgreSQL database on this machine; drop it afterwards."""
    url = make_url(os.environ.get("DUCTAL_BENCH_POSTGRES_URL", PG_DEFAULT))
    if url.host not in LOCAL:
        raise SystemExit(f"refusing to load a database that is not on this machine: {url.host}")
    # no pool: a connection must not outlive a server restart (benchmarks/faults_web.py)
    admin = create_engine(
        url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'load.sqlite'}"
    else:
        with scratch_postgres(f"ductal_load_{os.getpid()}") as url:
            yield url


def run_one(kind: str, *, seconds: float, clients: int, workers: int) -> bool:
    with (
        tempfile.TemporaryDirectory(prefix="ductal-load-") as tmp,
        database(kind, Path(tmp)) as url,
    ):
        tokens = loadgen.prepare(url, clients)
        with loadgen.serving(url, Path(tmp) / "data", workers=workers) as server:
            result = loadgen.drive(server.base, tokens, seconds=seconds)
        engine = make_engine(url)
        try:
            problems = loadgen.check(engine, result.ledger)
        finally:
            engine.dispose()
    summary = result.summary()
    summary.update(
        database=kind,
        workers=workers,
        acknowledged_records=len(result.ledger.records),
        acknowledged_subjects=len(result.ledger.subjects),
        randomised=len(result.ledger.arms),
        problems=problems,
    )
    print(json.dumps(summary, indent=2))
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of each run.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients.")
    parser.add_argument("--workers", type=int, default=4, help="uvicorn worker processes.")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    if not 0 < args.seconds <= 600:
        raise SystemExit("--seconds must be in (0, 600]")
    kinds = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    ok = True
    for kind in kinds:
        ok &= run_one(kind, seconds=args.seconds, clients=args.clients, workers=args.workers)
    print("all checks passed" if ok else "CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
