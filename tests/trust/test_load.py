"""Load: ``ductal serve`` with several workers under concurrent clients loses and doubles nothing.

A short run of :mod:`tests.trust.loadgen` (``benchmarks/load_web.py`` is the long one).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from ductal.db import make_engine
from tests.trust import loadgen


@pytest.mark.slow
def test_concurrent_clients_lose_and_double_nothing(database_url: str, tmp_path: Path) -> None:
    tokens = loadgen.prepare(database_url, clients=8)
    with loadgen.serving(database_url, tmp_path / "data", workers=2) as server:
        result = loadgen.drive(server.base, tokens, seconds=4.0)
    summary = result.summary()
    ledger = result.ledger
    assert summary["requests"] > 50, summary
    assert ledger.records and ledger.arms, summary  # forms entered and subjects randomised
    assert any(v > 1 for v in ledger.records.values()), "no edit was acknowledged"
    # only optimistic-lock conflicts may be refused; nothing unexplained
    unexpected = {k: n for k, n in ledger.errors.items() if "409" not in k}
    assert unexpected == {}, summary
    engine = make_engine(database_url)
    try:
        assert loadgen.check(engine, ledger) == []
    finally:
        engine.dispose()


def test_the_checks_catch_loss_doubling_and_going_back(database_url: str) -> None:
    """The post-run checks fail on a lost write, a slot told twice, a version going back."""
    loadgen.prepare(database_url, clients=1)
    engine = make_engine(database_url)
    try:
        assert loadgen.check(engine, loadgen.Ledger()) == []
        lost = loadgen.Ledger(records={424242: 1})
        assert any("424242 is missing" in p for p in loadgen.check(engine, lost))
        doubled = loadgen.Ledger(slots=[(1, 3), (1, 3)])
        assert any("two subjects" in p for p in loadgen.check(engine, doubled))
        gone = loadgen.Ledger(subjects={"LAV-9999": loadgen.OBS})
        assert any("LAV-9999 is missing" in p for p in loadgen.check(engine, gone))
        back = loadgen.Ledger(backwards=["record 1: saved 3 -> 2"])
        assert loadgen.check(engine, back) == ["record 1: saved 3 -> 2"]
    finally:
        engine.dispose()


@pytest.mark.slow
def test_server_killed_mid_burst_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    """SIGKILL every server process during a burst, start it again: nothing acknowledged is lost."""
    url = f"sqlite:///{tmp_path / 'kill.sqlite'}"
    tokens = loadgen.prepare(url, clients=6)
    server = loadgen.Server(url, tmp_path / "data", workers=2, port=loadgen.free_port())
    ledger = loadgen.Ledger()
    try:
        server.wait_ready()
        runner = threading.Thread(
            target=loadgen.drive,
            args=(server.base, tokens),
            kwargs={"seconds": 5.0, "ledger": ledger},
        )
        runner.start()
        time.sleep(3.0)
        before = len(ledger.records)
        server.kill()
        runner.join(timeout=120)  # the clients meet refused connections until their deadline
        server = loadgen.Server(url, tmp_path / "data", workers=2, port=server.port)
        server.wait_ready()
        restarted_at = time.monotonic()
        loadgen.drive(server.base, tokens, seconds=3.0, ledger=ledger)  # the same ledger
    finally:
        server.stop()
    assert before > 0, "nothing was written before the kill"
    assert ledger.errors, "the kill went unnoticed"
    assert any(t > restarted_at for t in ledger.ok_times), "no request was answered after restart"
    engine = make_engine(url)
    try:
        assert loadgen.check(engine, ledger) == []
    finally:
        engine.dispose()
