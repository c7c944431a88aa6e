"""A child process that saves forms in a loop and acknowledges each committed save on stdout.

Run as ``python -m tests.trust._writer URL STUDY_ID COUNT [--pause-at N] [--fsize-limit B]``.
Lines: ``ack create ID VERSION`` / ``ack update ID VERSION`` after the commit returned;
``inside N`` once the rows of save N are flushed but not committed (then it sleeps when
``--pause-at N``, so the parent can kill it mid-transaction); ``error MESSAGE`` on a domain error.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
import time

from ductal import forms, records
from ductal.db import make_engine, session_scope
from ductal.errors import DuctalError


def _ae(i: int) -> dict[str, object]:
    return {
        "term": f"burst event {i}",
        "onset_date": "2020-03-10",
        "ctcae_grade": 1 + i % 3,
        "serious": 0,
        "relatedness": "unrelated",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("study_id")
    parser.add_argument("count", type=int)
    parser.add_argument("--pause-at", type=int, default=-1)
    parser.add_argument("--fsize-limit", type=int, default=0)
    args = parser.parse_args(argv)
    if args.fsize_limit:
        # Past the limit write() fails with EFBIG, as on a full disk; ignore SIGXFSZ so SQLite
        # sees the error instead of the process being killed.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize_limit, args.fsize_limit))
    engine = make_engine(args.url)
    last: tuple[int, int] | None = None
    try:
        for i in range(args.count):
            with session_scope(engine) as session:
                subject = records.get_subject(session, args.study_id)
                if last is not None and i % 3 == 2:
                    data = {**_ae(i), "outcome": "recovered"}
                    saved = forms.save_form(
                        session,
                        subject=subject,
                        form_key="adverse_event",
                        event_key="unscheduled",
                        instance=last[0],
                        data=data,
                        expected_version=last[1],
                        reason=f"burst edit {i}",
                        actor="writer",
                    )
                    kind = "update"
                else:
                    saved = forms.save_form(
                        session,
                        subject=subject,
                        form_key="adverse_event",
                        event_key="unscheduled",
                        data=_ae(i),
                        actor="writer",
                    )
                    kind = "create"
                session.flush()
                print(f"inside {i}", flush=True)
                if i == args.pause_at:
                    time.sleep(30)
                record_id, instance, version = saved.id, saved.instance, saved.version
            print(f"ack {kind} {record_id} {version}", flush=True)
            last = (instance, version)
    except DuctalError as exc:
        print(f"error {exc.message}", flush=True)
        return 3
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
