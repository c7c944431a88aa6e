"""Cox regression (Efron ties) on 100,000 subjects x 3 covariates: ductal against R's coxph.

Run: .venv/bin/python benchmarks/stats_cox.py [N]
Both sides time the fit only (data read before the clock starts; ductal's fit includes input
checks and the concordance, as coxph computes it too) and report the fastest of 3 runs.
Target: ductal within 2x of coxph. Without Rscript only ductal's figure is printed.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from stats_rside import best_of, run_r

from ductal.stats.cox import CoxPH

REPEATS = 3


def make_data(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Three covariates (normal, binary, uniform), exponential times, ~30% censored, ties."""
    x1 = rng.normal(size=n)
    x2 = rng.binomial(1, 0.4, n)
    x3 = rng.uniform(20, 70, n)
    rate = 0.05 * np.exp(0.3 * x1 - 0.5 * x2 + 0.01 * (x3 - 45))
    event_time = rng.exponential(1 / rate)
    censor_time = rng.uniform(0, 40, n)
    return pd.DataFrame(
        {
            "time": np.round(np.minimum(event_time, censor_time), 1),
            "event": (event_time <= censor_time).astype(int),
            "x1": np.round(x1, 4),
            "x2": x2,
            "x3": np.round(x3, 2),
        }
    )


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = np.random.default_rng(np.random.SeedSequence(20261122))
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "cox.csv"
        make_data(n, rng).to_csv(csv, index=False)
        df = pd.read_csv(csv)

        def fit() -> CoxPH:
            return CoxPH().fit(df, time="time", event="event", covariates=["x1", "x2", "x3"])

        ours, model = best_of(REPEATS, fit)
        print(f"Cox (Efron), n = {n:,}, 3 covariates, {int(df['event'].sum()):,} events")
        print(f"  ductal CoxPH.fit: {ours:.3f} s")
        r = run_r("stats_cox.R", csv, REPEATS)
    if r is None:
        print("  Rscript not found: R's figure and the ratio are not available")
        return
    theirs = float(r[0])
    diff = np.max(np.abs(model.coef_ - np.array([float(c) for c in r[1:]])))
    print(f"  R coxph:          {theirs:.3f} s  (max coefficient difference {diff:.1e})")
    print(f"  ratio ductal / R: {ours / theirs:.2f}  (target <= 2)")


if __name__ == "__main__":
    main()
