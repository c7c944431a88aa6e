"""Drive ``ductal serve`` with many concurrent clients, then prove nothing was lost or doubled.

Used by ``tests/trust/test_load.py`` (a few seconds) and ``benchmarks/load_web.py`` (longer, on
SQLite and PostgreSQL). Every client is a thread with its own HTTP connection and API token of a
coordinator; it screens and enrols subjects, enters adverse-event forms, edits them with the
version it last saw, randomises subjects of the non-inferiority trial and reads records back.
A write counts as acknowledged when the server answered 2xx. After the run the database must hold
every acknowledged write exactly once, at its acknowledged version; no version ever read went
backwards; no two subjects share a randomisation slot; and the audit chain verifies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.fernet import Fernet
from sqlalchemy import Engine, func, select

from ductal import accounts, audit, records
from ductal.db import make_engine, migrate, session_scope
from ductal.models import AuditEntry, FormRecord, RandomisationSlot, Subject
from ductal.protocols.loader import builtin_protocol
from ductal.web.auth import create_token

OBS = "lavage-observational"
NI = "lavage-vs-steroid-ni"
HOST = "127.0.0.1"  # the load only ever targets this machine
WEIGHTS = {"enter": 0.35, "edit": 0.2, "read": 0.3, "screen": 0.07, "randomise": 0.08}


def screening(protocol_id: str, severe: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
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
    if protocol_id == NI:
        data["severity_score"] = 8 if severe else 3
        data["severity_group"] = "severe" if severe else "mild"
    return data


def adverse_event(n: int, *, edited: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "term": f"load event {n}",
        "onset_date": "2024-03-10",
        "ctcae_grade": 1 + n % 3,
        "serious": 0,
        "relatedness": "unrelated",
    }
    if edited:
        data["outcome"] = "recovered"
    return data


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def prepare(database_url: str, clients: int) -> list[str]:
    """Migrate and set up the study; return one coordinator API token per client."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
        tokens = []
        with session_scope(engine) as s:
            for pid in (OBS, NI):
                records.register_protocol(s, protocol=builtin_protocol(pid), actor="setup")
            riv = accounts.create_site(s, code="RIV", name="Riverside (load)", actor="setup")
            for i in range(clients):
                user = accounts.create_user(
                    s, username=f"coord{i}", full_name=f"Coordinator {i}", actor="setup"
                )
                accounts.grant(s, user=user, site=riv, role="coordinator", actor="setup")
                tokens.append(create_token(s, user=user, name="load", actor="setup"))
        return tokens
    finally:
        engine.dispose()


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    key_file = data_dir / "load-vault.key"
    if not key_file.exists():
        key_file.write_text(Fernet.generate_key().decode())
    return {
        **os.environ,
        "DUCTAL_ENV": "development",
        "DUCTAL_DATA_DIR": str(data_dir),
        "DUCTAL_DATABASE_URL": database_url,
        "DUCTAL_VAULT_KEY": key_file.read_text().strip(),
    }


class Server:
    """``ductal serve`` in its own process group, so a kill reaches every worker."""

    def __init__(self, database_url: str, data_dir: Path, *, workers: int, port: int) -> None:
        self.port = port
        self.base = f"http://{HOST}:{port}"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = (data_dir / f"serve-{port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ductal.cli import main; main()",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=server_env(database_url, data_dir),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ductal serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/api/v1/openapi.json", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("ductal serve did not start in time")

    def kill(self) -> None:
        """SIGKILL the server and all its workers at once."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()  # closing twice is harmless


@contextmanager
def serving(database_url: str, data_dir: Path, *, workers: int) -> Iterator[Server]:
    server = Server(database_url, data_dir, workers=workers, port=free_port())
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class Ledger:
    """What the server acknowledged, and what the clients saw, shared by every client."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    subjects: dict[str, str] = field(default_factory=dict)  # study id -> protocol
    records: dict[int, int] = field(default_factory=dict)  # record id -> acked version
    record_subject: dict[int, str] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=dict)  # study id -> arm
    slots: list[tuple[int, int]] = field(default_factory=list)  # (list id, position) told
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    ambiguous: int = 0  # writes with no answer: they may or may not have been stored
    backwards: list[str] = field(default_factory=list)
    ops: int = 0
    ok_times: list[float] = field(default_factory=list)  # monotonic end of each answered call
    error_times: list[float] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)  # first error message of each kind

    def timed(self, op: str, seconds: float) -> None:
        with self.lock:
            self.latencies[op].append(seconds)
            self.ok_times.append(time.monotonic())
            self.ops += 1

    def error(self, op: str, kind: str, *, ambiguous: bool, message: str = "") -> None:
        with self.lock:
            self.errors[f"{op}: {kind}"] += 1
            self.error_times.append(time.monotonic())
            self.messages.setdefault(kind, message)
            if ambiguous:
                self.ambiguous += 1


class _Refused(Exception):
    """The server answered with an error (the write was not acknowledged)."""


class Client:
    def __init__(self, base: str, token: str, ledger: Ledger, seed: np.random.SeedSequence):
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        )
        self.ledger = ledger
        self.rng = np.random.default_rng(seed)
        self.subjects: list[str] = []
        self.mine: dict[int, tuple[str, int, int]] = {}  # record id -> (study id, instance, ver)
        self.n = 0

    def call(self, op: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            # a refused connection never reached the server; any other failure may have
            # happened after the server committed, so the write's fate is unknown
            unsent = isinstance(exc, httpx.ConnectError)
            self.ledger.error(op, type(exc).__name__, ambiguous=method == "POST" and not unsent)
            time.sleep(0.2)
            raise _Refused from exc
        if r.status_code >= 400:
            ambiguous = r.status_code >= 500 and method == "POST"
            try:
                err = r.json().get("error", {})
                code, message = str(err.get("code", "")), str(err.get("message", ""))
            except ValueError:
                code, message = "not-json", r.text[:200]
            kind = f"{r.status_code} {code}".strip()
            self.ledger.error(op, kind, ambiguous=ambiguous, message=message)
            raise _Refused
        self.ledger.timed(op, time.perf_counter() - start)
        body: dict[str, Any] = r.json()
        return body

    def screen(self, protocol_id: str) -> str:
        severe = bool(self.rng.integers(2))
        s = self.call(
            "screen",
            "POST",
            "/api/v1/subjects",
            json={
                "protocol": protocol_id,
                "site": "RIV",
                "screening": screening(protocol_id, severe),
            },
        )
        sid = str(s["study_id"])
        with self.ledger.lock:
            self.ledger.subjects[sid] = protocol_id
        self.call(
            "enrol", "POST", f"/api/v1/subjects/{sid}/enrol", json={"enrolled_on": "2024-03-02"}
        )
        return sid

    def step(self, op: str) -> None:
        if op == "screen" or not self.subjects:
            self.subjects.append(self.screen(OBS))
        elif op == "randomise":
            sid = self.screen(NI)
            done = self.call("randomise", "POST", f"/api/v1/subjects/{sid}/randomise")
            told = done["assignment"]
            with self.ledger.lock:
                self.ledger.arms[sid] = str(told["arm"])
                self.ledger.slots.append((int(told["list_id"]), int(told["position"])))
        elif op == "enter" or not self.mine:
            sid = self.subjects[int(self.rng.integers(len(self.subjects)))]
            self.n += 1
            rec = self.call(
                "enter",
                "POST",
                f"/api/v1/subjects/{sid}/forms/adverse_event",
                json={"data": adverse_event(self.n), "event": "unscheduled"},
            )
            self._acked(int(rec["id"]), sid, int(rec["instance"]), int(rec["version"]), 0)
        elif op == "edit":
            rid = list(self.mine)[int(self.rng.integers(len(self.mine)))]
            sid, instance, version = self.mine[rid]
            self.n += 1
            rec = self.call(
                "edit",
                "POST",
                f"/api/v1/subjects/{sid}/forms/adverse_event",
                json={
                    "data": adverse_event(self.n, edited=True),
                    "event": "unscheduled",
                    "instance": instance,
                    "expected_version": version,
                    "reason": "load test edit",
                },
            )
            self._acked(rid, sid, instance, int(rec["version"]), version)
        else:
            rid = list(self.mine)[int(self.rng.integers(len(self.mine)))]
            rec = self.call("read", "GET", f"/api/v1/records/{rid}")
            if int(rec["version"]) < self.mine[rid][2]:
                with self.ledger.lock:
                    self.ledger.backwards.append(f"record {rid}: read {rec['version']}")
            self.call("read", "GET", f"/api/v1/subjects/{self.mine[rid][0]}/casebook")

    def _acked(self, rid: int, sid: str, instance: int, version: int, previous: int) -> None:
        if version <= previous:
            with self.ledger.lock:
                self.ledger.backwards.append(f"record {rid}: saved {previous} -> {version}")
        self.mine[rid] = (sid, instance, version)
        with self.ledger.lock:
            self.ledger.records[rid] = version
            self.ledger.record_subject[rid] = sid

    def run(self, deadline: float, stop: threading.Event) -> None:
        ops = list(WEIGHTS)
        p = np.array([WEIGHTS[o] for o in ops])
        while time.monotonic() < deadline and not stop.is_set():
            op = str(self.rng.choice(ops, p=p / p.sum()))
            try:
                self.step(op)
            except _Refused:
                time.sleep(0.05)
        self.http.close()


@dataclass
class RunResult:
    ledger: Ledger
    seconds: float
    clients: int

    def summary(self) -> dict[str, Any]:
        lat = [x for xs in self.ledger.latencies.values() for x in xs]
        out: dict[str, Any] = {
            "clients": self.clients,
            "seconds": round(self.seconds, 1),
            "requests": len(lat),
            "throughput_rps": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "errors": dict(self.ledger.errors),
            "acknowledged_writes": len(self.ledger.records) + len(self.ledger.subjects),
        }
        for op, xs in sorted({"all": lat, **self.ledger.latencies}.items()):
            if xs:
                q = np.percentile(np.array(xs) * 1000, [50, 95, 99])
                out[f"latency_ms_{op}"] = {
                    "n": len(xs),
                    "p50": round(float(q[0]), 1),
                    "p95": round(float(q[1]), 1),
                    "p99": round(float(q[2]), 1),
                }
        return out


def drive(
    base: str,
    tokens: list[str],
    *,
    seconds: float,
    seed: int = 20261122,
    stop: threading.Event | None = None,
    ledger: Ledger | None = None,
) -> RunResult:
    """Run one client thread per token against ``base`` for ``seconds``; return what happened."""
    ledger = ledger or Ledger()
    stop = stop or threading.Event()
    seeds = np.random.SeedSequence(seed).spawn(len(tokens))
    clients = [Client(base, t, ledger, s) for t, s in zip(tokens, seeds, strict=True)]
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=c.run, args=(deadline, stop)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    return RunResult(ledger, time.monotonic() - start, len(tokens))


def check(engine: Engine, ledger: Ledger) -> list[str]:
    """Return every way the database disagrees with what was acknowledged (empty: all good)."""
    problems: list[str] = []
    with session_scope(engine) as s:
        ae = select(FormRecord.id, FormRecord.version).where(FormRecord.form_key == "adverse_event")
        stored: dict[int, int] = {r[0]: r[1] for r in s.execute(ae)}
        subjects = {r[0]: r[1] for r in s.execute(select(Subject.study_id, Subject.arm))}
        slot_rows = s.execute(
            select(RandomisationSlot.subject_id, func.count())
            .where(RandomisationSlot.subject_id.is_not(None))
            .group_by(RandomisationSlot.subject_id)
        ).all()
        slot_arm = {
            r[0]: r[1]
            for r in s.execute(
                select(Subject.study_id, RandomisationSlot.arm).join(
                    RandomisationSlot, RandomisationSlot.subject_id == Subject.id
                )
            )
        }
        chain = audit.verify_chain(s)
        audited = Counter(
            (r[0], int(r[1]))
            for r in s.execute(
                select(AuditEntry.action, AuditEntry.entity_id).where(
                    AuditEntry.entity_type == "form_record"
                )
            )
        )
    for rid, version in stored.items():  # nothing half-written: record and audit agree
        if audited[("create", rid)] != 1 or audited[("update", rid)] != version - 1:
            problems.append(f"record {rid} (version {version}) and its audit entries disagree")
    for rid, version in ledger.records.items():
        if rid not in stored:
            problems.append(f"acknowledged record {rid} is missing")
        elif stored[rid] < version:
            problems.append(f"record {rid} is at version {stored[rid]}, acknowledged {version}")
        elif stored[rid] > version + ledger.ambiguous:
            problems.append(f"record {rid} is at version {stored[rid]}, beyond every ack")
    extra = len(set(stored) - set(ledger.records))
    if extra > ledger.ambiguous:
        problems.append(f"{extra} records were stored that nobody was told about")
    for sid in ledger.subjects:
        if sid not in subjects:
            problems.append(f"acknowledged subject {sid} is missing")
    for sid, arm in ledger.arms.items():
        if subjects.get(sid) != arm or slot_arm.get(sid) != arm:
            problems.append(f"subject {sid}: acknowledged arm {arm}, stored {subjects.get(sid)}")
    told_twice = [slot for slot, n in Counter(ledger.slots).items() if n > 1]
    if told_twice:
        problems.append(f"slots given to two subjects: {told_twice}")
    doubled = [sid for sid, n in slot_rows if n != 1]
    if doubled:
        problems.append(f"subjects holding more than one slot: {doubled}")
    problems += ledger.backwards
    if not chain.ok:
        problems.append(f"audit chain: {chain.problem}")
    return problems
