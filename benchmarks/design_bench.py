"""Design benchmarks, measured side by side in one run; prints figures and ratios.

    .venv/bin/python benchmarks/design_bench.py [--dask-trials 1000000] [--skip-dask]

1. Simulator throughput on one core: a 3-arm response-adaptive design with looks at 30, 45, ...,
   120 patients, inadequate-response and inferiority dropping, superiority stopping
   (target: at least 5,000 trials per second).
2. Against rpact: ductal and rpact::getSimulationMultiArmRates on the same 3-treatment + control
   keep-the-best design (tests/design/test_rpact_multiarm.py), trials per second
   (target: ratio at least 20). Needs Rscript with rpact; skipped otherwise.
3. Simon's exhaustive search with nmax 100 (target: under 0.5 s).
4. Dask: 1 vs 2 local worker processes on 1,000,000 trials of design 1 (target: at least 1.7x).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from ductal.design.runner import simulate  # noqa: E402
from ductal.design.simon import simon  # noqa: E402
from ductal.design.spec import AdaptiveDesign, parse_design  # noqa: E402

HERE = Path(__file__).resolve().parent


def three_arm_design() -> AdaptiveDesign:
    """Return the benchmark design: 3 arms, looks at 30, 45, ..., 120 patients."""
    return parse_design(
        {
            "name": "bench-three-arm",
            "arms": [{"id": "A"}, {"id": "B"}, {"id": "C"}],
            "looks": list(range(30, 121, 15)),
            "allocation": {
                "type": "response-adaptive",
                "softening": 0.5,
                "min_probability": 0.15,
                "max_probability": 0.7,
            },
            "rules": {
                "inadequate_response": {"threshold": 0.5, "bound": 0.1},
                "inferiority": {"bound": 0.01},
                "superiority": {"bound": 0.99},
            },
            "scenarios": [
                {"name": "null", "rates": {"A": 0.6, "B": 0.6, "C": 0.6}},
                {"name": "graded", "rates": {"A": 0.4, "B": 0.6, "C": 0.8}},
            ],
        }
    )


def rpact_equivalent_design() -> AdaptiveDesign:
    return parse_design(
        {
            "name": "rpact-equivalent",
            "arms": [{"id": "T1"}, {"id": "T2"}, {"id": "T3"}, {"id": "C", "control": True}],
            "looks": [80, 120],
            "rules": {"keep_best": {"arms": 1}},
            "scenarios": [
                {"name": "graded", "rates": {"T1": 0.35, "T2": 0.45, "T3": 0.55, "C": 0.3}}
            ],
        }
    )


def timed(**kwargs: Any) -> float:
    start = time.perf_counter()
    simulate(**kwargs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=40_000, help="trials for items 1 and 2")
    parser.add_argument("--dask-trials", type=int, default=1_000_000)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--only-dask", action="store_true", help="run item 4 alone")
    parser.add_argument("--rpact-iterations", type=int, default=1000)
    args = parser.parse_args()

    design = three_arm_design()
    if args.only_dask:
        _dask(design, args.dask_trials)
        return
    simulate(design, trials=2_000, seed=0)  # warm the posterior caches
    print("1. simulator, one core, 3 arms, looks 30..120 by 15")
    for name in ("null", "graded"):
        secs = timed(design=design, trials=args.trials, seed=1, scenarios=[name])
        rate = args.trials / secs
        print(f"   {name:<7} {rate:>10,.0f} trials/s   target 5,000   ratio {rate / 5000:.2f}")

    print("2. against rpact::getSimulationMultiArmRates (3 treatments + control, keep best)")
    eq = rpact_equivalent_design()
    secs = timed(design=eq, trials=args.trials, seed=1)
    ours = args.trials / secs
    print(f"   ductal {ours:>12,.0f} trials/s")
    if shutil.which("Rscript"):
        out = subprocess.run(
            ["Rscript", str(HERE / "r" / "design_rpact_multiarm.R"), str(args.rpact_iterations)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        theirs = float(out.split("iterations_per_second")[1].split()[0])
        print(f"   rpact  {theirs:>12,.1f} trials/s")
        print(f"   ratio  {ours / theirs:>12,.0f}x   target 20x")
        heavy = args.trials / timed(design=design, trials=args.trials, seed=2, scenarios=["graded"])
        print(f"   (the heavier design 1 runs at {heavy / theirs:,.0f}x rpact's rate here)")
    else:
        print("   Rscript not found: rpact comparison skipped")

    print("3. Simon two-stage search, nmax 100")
    simon(0.7, 0.9, 0.05, 0.2, nmax=100)
    best = min(_simon_seconds(p0, p1) for p0, p1 in ((0.7, 0.9), (0.2, 0.4), (0.05, 0.25)))
    worst = max(_simon_seconds(p0, p1) for p0, p1 in ((0.7, 0.9), (0.2, 0.4), (0.05, 0.25)))
    print(f"   {best:.3f}-{worst:.3f} s   target 0.5 s   ratio {0.5 / worst:.2f}")

    if not args.skip_dask:
        _dask(design, args.dask_trials)


def _worker_cpu() -> float:
    """Return this process's CPU seconds (run on each Dask worker)."""
    times = os.times()
    return times.user + times.system


def _dask(design: AdaptiveDesign, trials: int) -> None:
    """Time 1 and 2 local worker processes; also report the CPU seconds the workers used.

    On a machine shared with other jobs the wall-clock speed-up is capped by the CPU the workers
    can get; equal worker CPU totals for 1 and 2 workers show the work itself splits without
    overhead.
    """
    from dask.distributed import Client, LocalCluster

    print(f"4. Dask local cluster, {trials:,} trials (null scenario of design 1)")
    walls = {}
    for n in (1, 2):
        start = time.perf_counter()
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            Client(cluster) as client,
        ):
            before = client.run(_worker_cpu)
            simulate(
                design,
                trials=trials,
                seed=1,
                scenarios=["null"],
                scheduler=cluster.scheduler_address,
            )
            after = client.run(_worker_cpu)
        walls[n] = time.perf_counter() - start  # includes starting and stopping the cluster
        cpu = sum(after[k] - before[k] for k in after)
        print(
            f"   {n} worker(s): {walls[n]:.1f} s wall (with cluster start), "
            f"worker CPU {cpu:.1f} s = {cpu / walls[n]:.2f} cores on average"
        )
    print(f"   speed-up {walls[1] / walls[2]:.2f}x   target 1.7x")
    print(f"   load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _simon_seconds(p0: float, p1: float) -> float:
    start = time.perf_counter()
    simon(p0, p1, 0.05, 0.2, nmax=100)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
