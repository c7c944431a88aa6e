"""Faults under load: ``ductal serve`` killed mid-burst, its disk filled, PostgreSQL restarted.

Run: .venv/bin/python benchmarks/faults_web.py [--only kill|disk|pg-restart] [--clients 16]
  kill        SIGKILL every server process mid-burst (SQLite and PostgreSQL), restart on the same
              port; clients see connection errors, then carry on.
  disk        the SQLite database, then PostgreSQL's tables (a tablespace), on a small tmpfs
              (needs root to mount; skipped otherwise): writes must fail with 503
              database_unavailable and a plain message; then the file system is enlarged and
              writes work again.
  pg-restart  ``pg_ctlcluster --skip-systemctl-redirect 15 main restart`` under load; requests
              fail cleanly during the restart and succeed after. The cluster is started again at
              the end whatever happens. Other users of the server see the restart too.
After each: every acknowledged write is stored at its acknowledged version, nothing half-written
(each form record matches its audit entries), the audit chain verifies, SQLite passes
``PRAGMA integrity_check``. Only 127.0.0.1 is targeted; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.load_web import PG_DEFAULT, scratch_postgres
from tests.trust import loadgen

from ductal.db import make_engine

PG_CLUSTER = ("15", "main")


def _integrity(url: str) -> str:
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _check(url: str, ledger: loadgen.Ledger) -> list[str]:
    engine = make_engine(url)
    try:
        problems = loadgen.check(engine, ledger)
    finally:
        engine.dispose()
    if url.startswith("sqlite") and (result := _integrity(url)) != "ok":
        problems.append(f"integrity_check: {result}")
    return problems


def _under_load(
    url: str,
    data: Path,
    tokens: list[str],
    *,
    seconds: float,
    fault_at: float,
    fault: Callable[[loadgen.Server], loadgen.Server],
    ledger: loadgen.Ledger | None = None,
) -> tuple[loadgen.Ledger, float, float]:
    """Drive a server for ``seconds``, calling ``fault`` at ``fault_at``; return the ledger and
    the monotonic times the fault began and ended."""
    server = loadgen.Server(url, data, workers=2, port=loadgen.free_port())
    ledger = ledger or loadgen.Ledger()
    times: dict[str, float] = {}
    try:
        server.wait_ready()
        runner = threading.Thread(
            target=loadgen.drive,
            args=(server.base, tokens),
            kwargs={"seconds": seconds, "ledger": ledger},
        )
        runner.start()
        time.sleep(fault_at)
        times["start"] = time.monotonic()
        server = fault(server)
        times["end"] = time.monotonic()
        runner.join(timeout=seconds + 180)
    finally:
        server.stop()
    return ledger, times["start"], times["end"]


def _report(
    name: str,
    ledger: loadgen.Ledger,
    start: float,
    end: float,
    problems: list[str],
    log: Path | None = None,
) -> bool:
    after = [t for t in ledger.ok_times if t > end]
    last_error = max(ledger.error_times, default=start)
    out: dict[str, Any] = {
        "scenario": name,
        "answered_requests": len(ledger.ok_times),
        "acknowledged_records": len(ledger.records),
        "acknowledged_subjects": len(ledger.subjects),
        "errors": dict(ledger.errors),
        "error_messages": ledger.messages,
        "writes_without_answer": ledger.ambiguous,
        "fault_seconds": round(end - start, 2),
        "answered_after_recovery": len(after),
        "last_error_after_fault_s": round(last_error - end, 2),
        "problems": problems,
    }
    ok = not problems and len(after) > 0
    out["verdict"] = "pass" if ok else "FAIL"
    if not ok and log is not None and log.exists():
        lines = log.read_text(errors="replace").splitlines()
        out["server_errors"] = sorted({ln for ln in lines if "Error:" in ln})[:20]
    print(json.dumps(out, indent=2))
    return ok


def scenario_kill(kind: str, clients: int) -> bool:
    with tempfile.TemporaryDirectory(prefix="ductal-fault-") as tmp:
        if kind == "sqlite":
            return _kill(f"sqlite:///{tmp}/kill.sqlite", Path(tmp), clients, kind)
        with scratch_postgres(f"ductal_fault_{os.getpid()}") as url:
            return _kill(url, Path(tmp), clients, kind)


def _kill(url: str, tmp: Path, clients: int, kind: str) -> bool:
    tokens = loadgen.prepare(url, clients)

    def kill_and_restart(server: loadgen.Server) -> loadgen.Server:
        server.kill()
        again = loadgen.Server(url, tmp / "data", workers=2, port=server.port)
        again.wait_ready()
        return again

    ledger, start, end = _under_load(
        url, tmp / "data", tokens, seconds=45, fault_at=6, fault=kill_and_restart
    )
    return _report(f"SIGKILL server mid-burst ({kind})", ledger, start, end, _check(url, ledger))


def _fill_and_free(
    url: str, mnt: Path, data: Path, clients: int, name: str, *, room: int = 1_500_000
) -> bool:
    """Run a burst with ``room`` bytes free on ``mnt``; free space once writes are refused."""
    tokens = loadgen.prepare(url, clients)
    used = sum(p.stat().st_size for p in mnt.rglob("*") if p.is_file())
    size_kb = (used + room) // 1024  # a few hundred saves, then the disk is full
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(mnt)], check=True)
    ledger = loadgen.Ledger()

    def grow(server: loadgen.Server) -> loadgen.Server:
        deadline = time.monotonic() + 60  # wait for the disk to fill, then free it
        while time.monotonic() < deadline and not any("503" in k for k in ledger.errors):
            time.sleep(0.2)
        subprocess.run(["mount", "-o", "remount,size=256m", str(mnt)], check=True)
        return server

    ledger, start, end = _under_load(
        url, data, tokens, seconds=45, fault_at=0.5, fault=grow, ledger=ledger
    )
    problems = _check(url, ledger)
    if not any("503 database_unavailable" in k for k in ledger.errors):
        problems.append("the full disk never produced a 503 database_unavailable")
    other = [k for k in ledger.errors if k.split(": ")[1].startswith("5") and "503" not in k]
    if other:
        problems.append(f"a full disk gave other server errors: {other}")
    return _report(name, ledger, start, end, problems)


def scenario_disk(kind: str, clients: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        print(json.dumps({"scenario": f"disk full ({kind})", "verdict": "skipped: needs root"}))
        return True
    with tempfile.TemporaryDirectory(prefix="ductal-disk-") as tmp:
        if kind == "sqlite":
            mnt = Path(tmp) / "small"
            mnt.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True
            )
            try:
                return _fill_and_free(
                    f"sqlite:///{mnt}/full.sqlite",
                    mnt,
                    Path(tmp) / "data",
                    clients,
                    "disk full under the SQLite database",
                )
            finally:
                subprocess.run(["umount", "-l", str(mnt)], check=False)
        return _pg_disk(Path(tmp), clients)


def _pg_disk(tmp: Path, clients: int) -> bool:
    """PostgreSQL with the database's tables in a tablespace on a small tmpfs."""
    import pwd

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    owner = pwd.getpwnam("postgres")
    mnt = Path(tempfile.mkdtemp(prefix="ductal-pgts-"))  # directly under /tmp: reachable
    name = f"ductal_full_{os.getpid()}"
    base = make_url(os.environ.get("DUCTAL_BENCH_POSTGRES_URL", PG_DEFAULT))
    admin = create_engine(
        base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    options = f"size=256m,mode=0700,uid={owner.pw_uid},gid={owner.pw_gid}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], check=True)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE TABLESPACE {name} LOCATION '{mnt}'"))
            conn.execute(text(f'CREATE DATABASE "{name}" TABLESPACE {name}'))
        url = base.set(database=name).render_as_string(hide_password=False)
        # PostgreSQL's WAL stays in its data directory: only table and index pages land here
        return _fill_and_free(
            url,
            mnt,
            tmp / "data",
            clients,
            "disk full under PostgreSQL (tablespace on tmpfs)",
            room=256_000,
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f"DROP TABLESPACE IF EXISTS {name}"))
        admin.dispose()
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


def _cluster(action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, action],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def scenario_pg_restart(clients: int) -> bool:
    if shutil.which("pg_ctlcluster") is None:
        print(
            json.dumps({"scenario": "PostgreSQL restart", "verdict": "skipped: no pg_ctlcluster"})
        )
        return True
    try:
        with (
            tempfile.TemporaryDirectory(prefix="ductal-pg-") as tmp,
            scratch_postgres(f"ductal_restart_{os.getpid()}") as url,
        ):
            tokens = loadgen.prepare(url, clients)

            def restart(server: loadgen.Server) -> loadgen.Server:
                done = _cluster("restart")
                if done.returncode != 0:
                    raise RuntimeError(f"restart failed: {done.stderr.strip()}")
                return server

            ledger, start, end = _under_load(
                url, Path(tmp) / "data", tokens, seconds=25, fault_at=6, fault=restart
            )
            problems = _check(url, ledger)
            unclean = [k for k in ledger.errors if k.split(": ")[1].startswith("500")]
            if unclean:
                problems.append(f"errors that are not a clean 503/connection error: {unclean}")
            logs = sorted((Path(tmp) / "data").glob("serve-*.log"))
            return _report(
                "PostgreSQL restarted under load", ledger, start, end, problems, logs[-1]
            )
    finally:
        if (
            "online"
            not in subprocess.run(
                ["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=False
            ).stdout
        ):
            _cluster("start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["kill", "disk", "pg-restart"], default=None)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    ok = True
    if args.only in (None, "kill"):
        ok &= scenario_kill("sqlite", args.clients)
        ok &= scenario_kill("postgresql", args.clients)
    if args.only in (None, "disk"):
        ok &= scenario_disk("sqlite", args.clients)
        ok &= scenario_disk("postgresql", args.clients)
    if args.only in (None, "pg-restart"):
        ok &= scenario_pg_restart(args.clients)
    print("all fault checks passed" if ok else "FAULT CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
