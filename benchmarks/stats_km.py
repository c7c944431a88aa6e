"""Kaplan–Meier with confidence intervals on 1,000,000 subjects: ductal against R's survfit.

Run: .venv/bin/python benchmarks/stats_km.py [N]
Both sides time the computation only (the CSV is read before the clock starts) and report the
fastest of 3 runs. Target: ductal at least 5x faster than survfit. Without Rscript only ductal's
figure is printed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from stats_rside import best_of, run_r

from ductal.stats.survival import kaplan_meier

REPEATS = 3


def make_data(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Exponential event times, uniform censoring (about a third censored), 4 decimals."""
    event_time = rng.exponential(12.0, n)
    censor_time = rng.uniform(0, 40, n)
    return pd.DataFrame(
        {
            "time": np.round(np.minimum(event_time, censor_time), 4),
            "event": (event_time <= censor_time).astype(int),
        }
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rng = np.random.default_rng(np.random.SeedSequence(20261121))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "km.csv"
        make_data(n, rng).to_csv(csv, index=False)
        df = pd.read_csv(csv)
        time, event = df["time"].to_numpy(), df["event"].to_numpy()
        ours, curve = best_of(REPEATS, lambda: kaplan_meier(time, event, conf_type="log"))
        print(f"Kaplan-Meier, n = {n:,}, {len(curve.time):,} distinct times")
        print(f"  ductal kaplan_meier: {ours:.3f} s")
        r = run_r("stats_km.R", csv, REPEATS)
    if r is None:
        print("  Rscript not found: R's figure and the ratio are not available")
        return
    theirs = float(r[0])
    mid = curve.survival[len(curve.survival) // 2 - 1]
    print(f"  R survfit:           {theirs:.3f} s  (same curve: {abs(mid - float(r[2])) < 1e-9})")
    print(f"  ratio R / ductal:    {theirs / ours:.1f}x  (target >= 5x)")


if __name__ == "__main__":
    main()
