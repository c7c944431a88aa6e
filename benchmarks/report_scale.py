"""From a database of N synthetic subjects to the finished efficacy report, N = 1,000 … 10,000.

Run: .venv/bin/python benchmarks/report_scale.py [--sizes 1000 2500 5000 10000] [--pdf]
Prints, per size, the time of each stage (extract, derive, statistics, figures, render, and
PDF when asked), the total, the peak resident memory of the process that built the report, and
how time and memory grow relative to the smallest size. Target: 10,000 subjects to HTML in
under 30 s with under 1 GB peak memory on the 2-core development machine.

The benchmark databases are built once and cached in /tmp/ductal-bench (keyed by size and
seed). Writing 10,000 subjects through the records service would take about 20 minutes (7 ms a
form), so a base cohort of ``--base`` subjects is generated through the service and its rows
are then copied in bulk with new ids and shifted dates. The report path that is measured is the
real one: :func:`ductal.reports.build.build_report` on that database.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, select

from ductal import accounts, records
from ductal.db import make_engine, migrate, session_scope
from ductal.models import Event, FormRecord, Subject
from ductal.protocols.loader import builtin_protocols
from ductal.synthetic import generate_cohort

CACHE = Path("/tmp/ductal-bench")
PROTOCOL = "lavage-vs-steroid-ni"
SEED = 20240601


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, dt.date):
        return value + dt.timedelta(days=days)
    return value


def _shift_data(data: dict[str, Any], days: int) -> dict[str, Any]:
    out = dict(data)
    for key, value in data.items():
        if isinstance(value, str) and key.endswith("_date") and len(value) == 10:
            out[key] = (dt.date.fromisoformat(value) + dt.timedelta(days=days)).isoformat()
    return out


def _base(engine: Engine, n: int) -> None:
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="bench")
        sites = [
            accounts.create_site(session, code=code, name=f"Site {code}", actor="bench")
            for code in ("RIV", "HIL", "LAK")
        ]
        generate_cohort(
            session,
            protocol_id=PROTOCOL,
            n_subjects=n,
            rng=np.random.default_rng(SEED),
            sites=sites,
        )


def _replicate(engine: Engine, target: int) -> None:
    """Copy the base cohort's subjects, events and form records until ``target`` subjects."""
    with session_scope(engine) as session:
        subjects = session.execute(select(Subject.__table__)).mappings().all()
        events = session.execute(select(Event.__table__)).mappings().all()
        forms = session.execute(select(FormRecord.__table__)).mappings().all()
        next_subject = int(session.scalar(select(func.max(Subject.id))) or 0) + 1
        next_event = int(session.scalar(select(func.max(Event.id))) or 0) + 1
        next_form = int(session.scalar(select(func.max(FormRecord.id))) or 0) + 1
        copy = 1
        count = len(subjects)
        while count < target:
            days = 7 * copy
            subject_map: dict[int, int] = {}
            new_subjects = []
            for s in subjects:
                if count >= target:
                    break
                subject_map[s["id"]] = next_subject
                row = dict(s)
                row.update(
                    id=next_subject,
                    study_id=f"{s['study_id']}-{copy:03d}",
                    screened_on=_shift(s["screened_on"], days),
                    enrolled_on=_shift(s["enrolled_on"], days),
                )
                new_subjects.append(row)
                next_subject += 1
                count += 1
            event_map: dict[int, int] = {}
            new_events = []
            for e in events:
                if e["subject_id"] not in subject_map:
                    continue
                event_map[e["id"]] = next_event
                row = dict(e)
                row.update(id=next_event, subject_id=subject_map[e["subject_id"]])
                for key in ("scheduled_on", "window_start", "window_end", "occurred_on"):
                    row[key] = _shift(e[key], days)
                new_events.append(row)
                next_event += 1
            new_forms = []
            for f in forms:
                if f["subject_id"] not in subject_map:
                    continue
                row = dict(f)
                row.update(
                    id=next_form,
                    subject_id=subject_map[f["subject_id"]],
                    event_id=event_map[f["event_id"]],
                    data=_shift_data(f["data"], days),
                )
                new_forms.append(row)
                next_form += 1
            session.execute(insert(Subject.__table__), new_subjects)
            session.execute(insert(Event.__table__), new_events)
            session.execute(insert(FormRecord.__table__), new_forms)
            copy += 1


def database(size: int, base: int) -> Path:
    """Return the cached benchmark database of ``size`` subjects, building it if needed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"report_{PROTOCOL}_{size}_{base}_{SEED}.sqlite"
    if path.exists():
        return path
    base_path = CACHE / f"report_{PROTOCOL}_base_{base}_{SEED}.sqlite"
    if not base_path.exists():
        print(f"building the base cohort of {base} subjects through the records service …")
        tmp = base_path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        engine = make_engine(f"sqlite:///{tmp}")
        migrate(engine)
        _base(engine, base)
        engine.dispose()
        tmp.rename(base_path)
    print(f"replicating to {size} subjects …")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(base_path.read_bytes())
    engine = make_engine(f"sqlite:///{tmp}")
    _replicate(engine, size)
    engine.dispose()
    tmp.rename(path)
    return path


def child(path: Path, out: Path, pdf: bool) -> None:
    """Build the report on ``path`` and print one JSON line (run in a fresh process)."""
    from ductal.reports.build import build_report

    engine = make_engine(f"sqlite:///{path}")
    with session_scope(engine) as session:
        subjects = session.scalar(select(func.count()).select_from(Subject))
        forms = session.scalar(select(func.count()).select_from(FormRecord))
    start = time.perf_counter()
    result = build_report(engine, out, protocol_ids=[PROTOCOL], pdf=pdf)
    total = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "subjects": subjects,
                "forms": forms,
                "total": total,
                "timings": result.timings,
                "cpu": result.cpu_timings,
                "peak_mb": peak_mb,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2500, 5000, 10000])
    parser.add_argument("--base", type=int, default=250, help="subjects written by the service")
    parser.add_argument("--pdf", action="store_true", help="also time the PDF")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=CACHE / "out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.pdf)
        return
    rows = []
    for size in args.sizes:
        path = database(size, args.base)
        cmd = [sys.executable, __file__, "--child", str(path), "--out", str(CACHE / f"out_{size}")]
        if args.pdf:
            cmd.append("--pdf")
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    stages = ["extract", "derive", "statistics", "figures", "render"] + (
        ["pdf"] if args.pdf else []
    )
    print("wall-clock seconds per stage (CPU seconds, this process and its workers, in brackets)")
    head = f"{'subjects':>8} {'forms':>7} " + " ".join(f"{s:>13}" for s in stages)
    print(head + f" {'total s':>13} {'peak MB':>8} {'x time':>7} {'x mem':>6}")
    first = rows[0]
    for r in rows:
        cells = " ".join(f"{r['timings'][s]:>6.2f} ({r['cpu'][s]:>4.1f})" for s in stages)
        cpu_total = sum(r["cpu"][s] for s in stages)
        print(
            f"{r['subjects']:>8} {r['forms']:>7} {cells} {r['total']:>6.2f} ({cpu_total:>4.1f}) "
            f"{r['peak_mb']:>8.0f} {r['total'] / first['total']:>7.2f} "
            f"{r['peak_mb'] / first['peak_mb']:>6.2f}"
        )
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} cores")
    last = rows[-1]
    verdict = "meets" if last["total"] < 30 and last["peak_mb"] < 1024 else "MISSES"
    print(
        f"\n{last['subjects']} subjects: {last['total']:.1f} s, {last['peak_mb']:.0f} MB peak — "
        f"{verdict} the target (< 30 s, < 1 GB); subjects grew x"
        f"{last['subjects'] / first['subjects']:.1f}."
    )


if __name__ == "__main__":
    main()
