"""Exchange throughput: REDCap CSV and ODM export of 100,000 subjects against pandas ``to_csv``.

    .venv/bin/python benchmarks/exchange_throughput.py [--subjects 100000] [--import-subjects 20000]

What is measured (each phase in its own process, so its peak memory is its own):

* **templates**: 40 synthetic subjects of ``lavage-observational`` are written through the
  records service into a temporary SQLite database and read back; the 100,000 exported
  subjects are those templates cycled with new study ids (made lazily, one at a time). This
  measures the writers, not the database.
* **pandas baseline**: the same REDCap rows (the strings the REDCap writer produces, built
  before the clock starts) for the first ``--pandas-subjects`` subjects, in a DataFrame written
  with ``DataFrame.to_csv``; rows per second.
* **REDCap export**: ``write_records`` streaming all subjects to a file; rows per second and
  peak resident memory (target: at least half the pandas rate, under 500 MB).
* **ODM export**: ``write_odm`` streaming all subjects to a file; expressed in the same REDCap
  rows per second (the same data), and peak memory (same targets).
* **REDCap import**: ``read_records`` (parse every row and check every value against the
  protocol: types, code lists, ranges, rules) of the CSV of the first ``--import-subjects``
  subjects; rows per second (target: at least a third of the pandas rate). Writing through the
  records service into a database is not part of this figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

TEMPLATES = 40
PROTOCOL = "lavage-observational"


def _templates(folder: Path) -> Path:
    import numpy as np

    from ductal import accounts, records
    from ductal.db import make_engine, migrate, session_scope
    from ductal.exchange.study_data import collect_subjects
    from ductal.protocols.loader import builtin_protocols
    from ductal.synthetic import generate_cohort

    engine = make_engine(f"sqlite:///{folder / 'templates.sqlite'}")
    migrate(engine)
    with session_scope(engine) as session:
        for protocol in builtin_protocols():
            records.register_protocol(session, protocol=protocol, actor="bench")
        site = accounts.create_site(session, code="RIV", name="Riverside", actor="bench")
        generate_cohort(
            session,
            protocol_id=PROTOCOL,
            n_subjects=TEMPLATES,
            rng=np.random.default_rng(2024),
            sites=[site],
        )
    with session_scope(engine) as session:
        subjects = [s for s in collect_subjects(session, PROTOCOL) if s.forms]
    path = folder / "templates.json"
    path.write_text(json.dumps([_plain(s) for s in subjects]))
    engine.dispose()
    return path


def _plain(subject: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(subject)


def _load(path: Path) -> list[Any]:
    from ductal.exchange.study_data import FormData, SubjectData

    out = []
    for raw in json.loads(path.read_text()):
        forms = [FormData(**f) for f in raw.pop("forms")]
        out.append(SubjectData(**raw, forms=forms))
    return out


def _subjects(templates: list[Any], n: int) -> Iterator[Any]:
    for i, template in zip(range(n), itertools.cycle(templates), strict=False):
        yield replace(template, study_id=f"LAV-{i + 1:06d}")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(name: str, templates_path: Path, n: int, folder: Path) -> dict[str, Any]:
    from ductal.exchange.odm import write_odm
    from ductal.exchange.redcap_records import RecordsLayout, read_records, subject_rows
    from ductal.exchange.redcap_records import write_records as write_redcap
    from ductal.exchange.report import ImportReport
    from ductal.protocols.loader import builtin_protocol

    protocol = builtin_protocol(PROTOCOL)
    templates = _load(templates_path)
    layout = RecordsLayout(protocol)
    rows_per_subject = sum(len(subject_rows(layout, t)) for t in templates) / len(templates)
    result: dict[str, Any] = {"phase": name, "subjects": n}
    if name == "pandas":
        import pandas as pd

        rows = [row for s in _subjects(templates, n) for row in subject_rows(layout, s)]
        frame = pd.DataFrame(rows, columns=layout.header)
        del rows
        start = time.perf_counter()
        frame.to_csv(folder / "pandas.csv", index=False)
        seconds = time.perf_counter() - start
        result.update(rows=len(frame), seconds=seconds)
    elif name == "redcap":
        start = time.perf_counter()
        with (folder / "records.csv").open("w", newline="") as stream:
            write_redcap(protocol, _subjects(templates, n), stream)
        seconds = time.perf_counter() - start
        result.update(
            rows=round(rows_per_subject * n),
            seconds=seconds,
            bytes=(folder / "records.csv").stat().st_size,
        )
    elif name == "odm":
        start = time.perf_counter()
        with (folder / "study.xml").open("w") as stream:
            write_odm(protocol, _subjects(templates, n), stream, sites=["RIV"])
        seconds = time.perf_counter() - start
        result.update(
            rows=round(rows_per_subject * n),
            seconds=seconds,
            bytes=(folder / "study.xml").stat().st_size,
        )
    elif name == "import":
        source = folder / "import.csv"
        with source.open("w", newline="") as stream:
            write_redcap(protocol, _subjects(templates, n), stream)
        text = source.read_text()
        start = time.perf_counter()
        report = ImportReport(source="bench")
        located = read_records(protocol, text, report)
        seconds = time.perf_counter() - start
        assert not report.errors, report.errors[:3]
        assert len(located) == n
        result.update(rows=text.count("\n") - 1, seconds=seconds)
    result["rows_per_second"] = result["rows"] / result["seconds"]
    result["peak_mb"] = _peak_mb()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=100_000)
    parser.add_argument("--pandas-subjects", type=int, default=20_000)
    parser.add_argument("--import-subjects", type=int, default=20_000)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--templates", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        n = {"pandas": args.pandas_subjects, "import": args.import_subjects}.get(
            args.phase, args.subjects
        )
        print(json.dumps(_phase(args.phase, Path(args.templates), n, Path(args.folder))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        templates = _templates(folder)
        results = {}
        for phase in ("pandas", "redcap", "odm", "import"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--phase",
                    phase,
                    "--templates",
                    str(templates),
                    "--folder",
                    str(folder),
                    "--subjects",
                    str(args.subjects),
                    "--pandas-subjects",
                    str(args.pandas_subjects),
                    "--import-subjects",
                    str(args.import_subjects),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[phase] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["pandas"]["rows_per_second"]
    print(
        f"{'phase':<8} {'subjects':>9} {'rows':>10} {'seconds':>8} {'rows/s':>10} "
        f"{'vs pandas':>9} {'peak MB':>8}"
    )
    for phase, r in results.items():
        print(
            f"{phase:<8} {r['subjects']:>9} {r['rows']:>10} {r['seconds']:>8.2f} "
            f"{r['rows_per_second']:>10.0f} {r['rows_per_second'] / base:>9.2f} "
            f"{r['peak_mb']:>8.0f}"
        )
    checks = [
        ("REDCap export >= 0.5 x pandas", results["redcap"]["rows_per_second"] >= 0.5 * base),
        ("ODM export >= 0.5 x pandas", results["odm"]["rows_per_second"] >= 0.5 * base),
        ("REDCap import >= 1/3 x pandas", results["import"]["rows_per_second"] >= base / 3),
        ("REDCap export peak < 500 MB", results["redcap"]["peak_mb"] < 500),
        ("ODM export peak < 500 MB", results["odm"]["peak_mb"] < 500),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")


if __name__ == "__main__":
    main()
