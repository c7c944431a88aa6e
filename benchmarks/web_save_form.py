"""Benchmark: saving a form through the full web stack against a one-INSERT baseline endpoint.

Both endpoints run in the same uvicorn server, measured side by side in one run by 16 concurrent
HTTP clients:

* **full stack** — ``POST /api/v1/subjects/{id}/forms/adverse_event``: bearer-token check,
  roles, subject and site check, validation against the protocol, the form record, its
  hash-chained audit entry, one transaction, the record returned as JSON (after a client's
  first save of its subject in a worker, the token and the subject's facts are confirmed by the
  statements that store the form rather than read first: see docs/web.md, Performance);
* **baseline** — ``POST /bench/insert`` (added here, never in production code): the same JSON
  body stored with one ``INSERT`` into a scratch table.

Afterwards every write is checked: each request carried a unique marker, and each marker must be
stored exactly once (no lost, no duplicated write). The audit chain must still verify.

    .venv/bin/python benchmarks/web_save_form.py                      # SQLite, 1 worker
    .venv/bin/python benchmarks/web_save_form.py --postgres URL --workers 2

Prints requests/s of each endpoint, the ratio full/baseline, and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import Request

CLIENTS = 16
TARGET_RATIO = 0.5
TARGET_P95_MS = 100.0


def bench_app() -> Any:
    """Return the production app plus the benchmark-only baseline route (uvicorn factory)."""
    from sqlalchemy import Engine, text

    from ductal.config import load_settings
    from ductal.web.app import create_app
    from ductal.web.deps import run_database_work

    app = create_app(load_settings())

    _INSERT = text("INSERT INTO bench_scratch (payload) VALUES (:p)")

    @app.post("/bench/insert", include_in_schema=False)
    async def insert(request: Request) -> dict[str, int]:
        body = (await request.body()).decode()

        def write(engine: Engine) -> None:
            with engine.begin() as conn:  # a bare connection: cheaper than the app's sessions
                conn.execute(_INSERT, {"p": body})

        # run the way the app runs its own database work (SQLite: on the event loop when the
        # database is free, else on a worker thread holding the SQLite lock; PostgreSQL: a
        # worker thread)
        await run_database_work(app.state.ductal, write)
        return {"ok": 1}

    # first in the routing table: matching a path costs a few microseconds per route tried, and
    # at the end of the table (after every page) the baseline would pay ~0.3 ms per request
    # that the API routes, near the start, do not; put first, it pays the least of any route
    app.router.routes.insert(0, app.router.routes.pop())
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prepare(database_url: str) -> tuple[str, list[str]]:
    """Migrate, register the protocol, one site, a coordinator with a token, 16 subjects."""
    from sqlalchemy import text

    from ductal import accounts, records
    from ductal.db import make_engine, migrate, session_scope
    from ductal.protocols.loader import builtin_protocol
    from ductal.web.auth import create_token

    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text("CREATE TABLE bench_scratch (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
            )
        else:
            conn.execute(text("CREATE TABLE bench_scratch (id SERIAL PRIMARY KEY, payload TEXT)"))
    screening = {
        "screening_date": "2024-03-01",
        "age": 34,
        "sex": "female",
        "non_lactating_6m": 1,
        "pathology_confirmed": 1,
        "diagnosis": "igm",
        "carcinoma_excluded": 1,
        "consent_signed": 1,
        "consent_date": "2024-03-01",
    }
    import datetime as dt

    with session_scope(engine) as s:
        records.register_protocol(
            s, protocol=builtin_protocol("lavage-observational"), actor="bench"
        )
        site = accounts.create_site(s, code="BEN", name="Benchmark site", actor="bench")
        user = accounts.create_user(s, username="bench", full_name="Bench", actor="bench")
        accounts.grant(s, user=user, site=site, role="coordinator", actor="bench")
        token = create_token(s, user=user, name="bench", actor="bench")
        ids = []
        for _ in range(CLIENTS):
            subject = records.screen(
                s,
                protocol_id="lavage-observational",
                site=site,
                screening=screening,
                actor="bench",
            )
            records.enrol(s, subject=subject, actor="bench", enrolled_on=dt.date(2024, 3, 2))
            ids.append(subject.study_id)
    engine.dispose()
    return token, ids


def _payload(marker: str) -> dict[str, Any]:
    return {
        "event": "unscheduled",
        "data": {
            "term": marker,
            "onset_date": "2024-04-01",
            "ctcae_grade": 1,
            "serious": 0,
            "relatedness": "unrelated",
            "outcome": "recovered",
        },
    }


async def _load(
    base: str, token: str, subjects: list[str], *, full: bool, per_client: int, tag: str
) -> tuple[float, list[float], list[str], int]:
    import httpx2 as httpx

    latencies: list[float] = []
    markers: list[str] = []
    failures = 0
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as c:

        async def client(k: int) -> None:
            nonlocal failures
            url = f"/api/v1/subjects/{subjects[k]}/forms/adverse_event" if full else "/bench/insert"
            for i in range(per_client):
                marker = f"{tag}-{k}-{i}"
                t0 = time.perf_counter()
                r = await c.post(url, json=_payload(marker))
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code == 200:
                    markers.append(marker)
                else:
                    failures += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        elapsed = time.perf_counter() - t0
    return elapsed, latencies, markers, failures


def _stored_markers(database_url: str, tag: str) -> tuple[list[str], list[str]]:
    from sqlalchemy import select, text

    from ductal.audit import verify_chain
    from ductal.db import make_engine, session_scope
    from ductal.models import FormRecord

    engine = make_engine(database_url)
    with session_scope(engine) as s:
        forms = [
            d["term"]
            for d in s.scalars(
                select(FormRecord.data).where(FormRecord.form_key == "adverse_event")
            )
            if str(d.get("term", "")).startswith(tag)
        ]
        base = [
            json.loads(p)["data"]["term"]
            for p in s.scalars(text("SELECT payload FROM bench_scratch"))
        ]
        base = [m for m in base if m.startswith(tag)]
        chain = verify_chain(s)
    engine.dispose()
    if not chain.ok:
        raise SystemExit(f"audit chain broken: {chain.problem}")
    return forms, base


def _check(name: str, sent: list[str], stored: list[str]) -> str:
    duplicates = len(stored) - len(set(stored))
    lost = len(set(sent) - set(stored))
    extra = len(set(stored) - set(sent))
    if duplicates or lost or extra:
        raise SystemExit(f"{name}: {lost} lost, {duplicates} duplicated, {extra} unexpected writes")
    return f"{name}: {len(stored)} writes stored exactly once"


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="PostgreSQL URL of a server to create a database on")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--requests", type=int, default=18, help="requests per client per round")
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="alternating rounds of each (short rounds: both see the same machine)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="ductal-bench-"))
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        name = f"ductal_bench_{os.getpid()}"
        admin = create_engine(
            make_url(args.postgres).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        database_url = make_url(args.postgres).set(database=name).render_as_string(False)
    else:
        database_url = f"sqlite:///{tmp / 'bench.sqlite'}"
    token, subjects = _prepare(database_url)
    port = _free_port()
    env = {
        **os.environ,
        "DUCTAL_DATA_DIR": str(tmp),
        "DUCTAL_DATABASE_URL": database_url,
        "DUCTAL_ENV": "development",
    }
    here = Path(__file__).resolve().parent
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "web_save_form:bench_app",
            "--factory",
            "--app-dir",
            str(here),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    try:
        import httpx2 as httpx

        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/login").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        tag = f"b{os.getpid()}"
        # warm-up (caches, connection pools), not counted in the figures
        asyncio.run(_load(base, token, subjects, full=True, per_client=3, tag=f"{tag}w"))
        asyncio.run(_load(base, token, subjects, full=False, per_client=3, tag=f"{tag}w"))
        results: dict[str, dict[str, Any]] = {
            k: {"elapsed": 0.0, "lat": [], "sent": [], "fail": 0} for k in ("full", "base")
        }
        for r in range(args.rounds):  # alternate so both see the same machine load
            for key, full in (("base", False), ("full", True)):
                elapsed, lat, sent, fail = asyncio.run(
                    _load(
                        base,
                        token,
                        subjects,
                        full=full,
                        per_client=args.requests,
                        tag=f"{tag}-{key}{r}",
                    )
                )
                res = results[key]
                res["elapsed"] += elapsed
                res["lat"] += lat
                res["sent"] += sent
                res["fail"] += fail
    finally:
        server.terminate()
        server.wait(timeout=30)
    forms, scratch = _stored_markers(database_url, tag)
    forms = [m for m in forms if not m.startswith(f"{tag}w")]
    scratch = [m for m in scratch if not m.startswith(f"{tag}w")]
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"ductal web benchmark: {backend}, {args.workers} uvicorn worker(s), {CLIENTS} clients, "
        f"{args.rounds} alternating rounds of {args.requests} requests per client"
    )
    rates = {}
    for key, label in (("base", "baseline (one INSERT)"), ("full", "full stack save_form")):
        res = results[key]
        n = len(res["lat"])
        rates[key] = n / res["elapsed"]
        lat = res["lat"]
        print(
            f"  {label:<24} {rates[key]:8.1f} req/s   p50 {_pct(lat, 50):6.1f} ms   "
            f"p95 {_pct(lat, 95):6.1f} ms   p99 {_pct(lat, 99):6.1f} ms   failures {res['fail']}"
        )
    ratio = rates["full"] / rates["base"]
    p95 = _pct(results["full"]["lat"], 95)
    print(f"  ratio full/baseline      {ratio:8.2f}   (target >= {TARGET_RATIO})")
    print(f"  full-stack p95           {p95:8.1f} ms (target < {TARGET_P95_MS:.0f} ms)")
    print("  " + _check("full stack", results["full"]["sent"], forms))
    print("  " + _check("baseline", results["base"]["sent"], scratch))
    print("  audit chain verified")
    if args.postgres:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(
            make_url(args.postgres).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    ok = ratio >= TARGET_RATIO and p95 < TARGET_P95_MS
    print("  result: " + ("targets met" if ok else "TARGETS MISSED"))


if __name__ == "__main__":
    main()
