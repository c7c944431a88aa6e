"""Run a design's scenarios in chunks, serially or on Dask, and summarise operating characteristics.

Trials are split into fixed-size chunks, and chunk ``c`` of scenario ``s`` draws its random
numbers from ``SeedSequence(seed, spawn_key=(s, c))``. Chunk statistics are added in chunk
order, so the result is the same for any number of workers, on one machine or a cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ductal.design import rules as R
from ductal.design.rules import Plan, compile_design
from ductal.design.simulate import ChunkStats, simulate_chunk
from ductal.design.spec import AdaptiveDesign
from ductal.errors import ConfigError, Problem, ValidationError

CHUNK_TRIALS = 5_000
Progress = Callable[[int], None]


@dataclass(frozen=True)
class _Task:
    scenario: int
    chunk: int
    trials: int


def _tasks(n_scenarios: int, trials: int, chunk: int) -> list[_Task]:
    out = []
    for s in range(n_scenarios):
        for c in range(math.ceil(trials / chunk)):
            out.append(_Task(s, c, min(chunk, trials - c * chunk)))
    return out


def _run_task(
    plan: Plan, rates: np.ndarray, task: _Task, seed: int, draws: int | None
) -> ChunkStats:
    ss = np.random.SeedSequence(seed, spawn_key=(task.scenario, task.chunk))
    return simulate_chunk(plan, rates, task.trials, ss, draws)


def _quantiles(hist: np.ndarray, qs: tuple[float, ...]) -> list[int]:
    cum = np.cumsum(hist) / max(int(hist.sum()), 1)
    return [int(np.searchsorted(cum, q - 1e-12)) for q in qs]


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def summarise(design: AdaptiveDesign, plan: Plan, index: int, stats: ChunkStats) -> dict[str, Any]:
    """Return the operating characteristics of one scenario as a JSON-ready dict."""
    scenario = design.scenarios[index]
    t = stats.trials
    rates = np.array([scenario.rates[a] for a in plan.arm_ids])
    null = design.is_null(scenario)
    p_success = stats.success / t
    values = np.arange(stats.n_hist.shape[1])
    arms = []
    for i, arm_id in enumerate(plan.arm_ids):
        hist = stats.n_hist[i]
        mean_n = float((hist * values).sum() / t)
        var_n = float((hist * (values - mean_n) ** 2).sum() / t)
        seen = int(stats.est_count[i])
        mean_est = float(stats.est_sum[i] / seen) if seen else None
        sel = int(stats.selected[i])
        arms.append(
            {
                "arm": arm_id,
                "true_rate": float(rates[i]),
                "p_selected": sel / t,
                "p_selected_by_look": [float(v) for v in stats.selected_by_look[i] / t],
                "p_dropped": float(stats.dropped[i].sum() / t),
                "p_dropped_inadequate": float(stats.dropped[i, :, 0].sum() / t),
                "p_dropped_inferior": float(stats.dropped[i, :, 1].sum() / t),
                "p_dropped_not_best": float(stats.dropped[i, :, 2].sum() / t),
                "p_dropped_by_look": [float(v) for v in stats.dropped[i].sum(axis=1) / t],
                "p_efficacious": float(stats.efficacious[i] / t),
                "expected_n": mean_n,
                "sd_n": math.sqrt(var_n),
                "n_quantiles": dict(
                    zip(
                        [f"q{int(q * 100):02d}" for q in QUANTILES],
                        _quantiles(hist, QUANTILES),
                        strict=True,
                    )
                ),
                "mean_estimate": mean_est,
                "bias": None if mean_est is None else mean_est - float(rates[i]),
                "rmse": math.sqrt(stats.est_sq[i] / seen) if seen else None,
                "bias_posterior_mean": float(stats.post_sum[i] / t - rates[i]),
                "bias_when_selected": (
                    float(stats.sel_est_sum[i] / sel - rates[i]) if sel else None
                ),
            }
        )
    total = stats.total_hist
    mean_total = float((total * np.arange(total.size)).sum() / t)
    return {
        "scenario": scenario.name,
        "null": null,
        "rates": {a: float(r) for a, r in zip(plan.arm_ids, rates, strict=True)},
        "trials": t,
        "p_success": p_success,
        "mc_se": math.sqrt(p_success * (1 - p_success) / t),
        "type_i_error": p_success if null else None,
        "power": None if null else p_success,
        "p_select_best": None if null else stats.selected_best / t,
        "p_no_selection": 1 - float(stats.selected.sum() / t),
        "p_stop_by_look": dict(
            zip([str(int(v)) for v in plan.looks], (stats.stop_look / t).tolist(), strict=True)
        ),
        "p_stop_reason": {
            name: float(stats.stop_reason[code] / t) for code, name in R.STOP_REASONS.items()
        },
        "expected_n_total": mean_total,
        "n_total_quantiles": dict(
            zip(
                [f"q{int(q * 100):02d}" for q in QUANTILES],
                _quantiles(total, QUANTILES),
                strict=True,
            )
        ),
        "arms": arms,
    }


def _check_run(trials: int, draws: int | None, workers: int | None) -> None:
    problems: list[Problem] = []
    if trials < 1:
        problems.append(Problem("trials", f"must be at least 1, got {trials}"))
    if draws is not None and draws < 10:
        problems.append(Problem("draws", f"must be at least 10, got {draws}"))
    if workers is not None and workers < 1:
        problems.append(Problem("workers", f"must be at least 1, got {workers}"))
    if problems:
        raise ValidationError("invalid simulation settings", problems=problems)


def simulate(
    design: AdaptiveDesign,
    *,
    trials: int = 10_000,
    seed: int = 1,
    draws: int | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    scenarios: list[str] | None = None,
    progress: Progress | None = None,
    chunk_trials: int = CHUNK_TRIALS,
) -> dict[str, Any]:
    """Return the operating characteristics of ``design`` under each scenario.

    ``workers`` starts a local Dask cluster with that many single-threaded worker processes;
    ``scheduler`` (``tcp://host:port``) uses an existing cluster; neither runs in this process.
    ``draws`` switches the posterior probabilities from numerical integration to Monte Carlo.
    ``progress`` is called with the number of trials completed after each chunk.
    """
    _check_run(trials, draws, workers)
    plan = compile_design(design)
    names = [s.name for s in design.scenarios]
    chosen = list(range(len(names)))
    if scenarios:
        missing = [s for s in scenarios if s not in names]
        if missing:
            raise ValidationError(
                "unknown scenario",
                problems=[Problem("scenario", f"no scenario {m!r}") for m in missing],
            )
        chosen = [names.index(s) for s in scenarios]
    rates = {
        s: np.array([design.scenarios[s].rates[a] for a in plan.arm_ids], dtype=float)
        for s in chosen
    }
    tasks = [t for t in _tasks(len(names), trials, chunk_trials) if t.scenario in rates]
    results: list[ChunkStats | None] = [None] * len(tasks)
    if workers is None and scheduler is None:
        for i, task in enumerate(tasks):
            results[i] = _run_task(plan, rates[task.scenario], task, seed, draws)
            if progress:
                progress(task.trials)
    else:
        _run_dask(plan, rates, tasks, seed, draws, workers, scheduler, results, progress)
    out: list[dict[str, Any]] = []
    for s in chosen:
        parts = [r for r, t in zip(results, tasks, strict=True) if t.scenario == s]
        total = parts[0]
        assert total is not None
        for part in parts[1:]:
            assert part is not None
            total = total + part
        out.append(summarise(design, plan, s, total))
    return {
        "design": design.name,
        "arms": list(plan.arm_ids),
        "looks": [int(v) for v in plan.looks],
        "trials": trials,
        "seed": seed,
        "posterior": "numerical integration" if draws is None else f"Monte Carlo, {draws} draws",
        "scenarios": out,
    }


def _run_dask(
    plan: Plan,
    rates: dict[int, np.ndarray],
    tasks: list[_Task],
    seed: int,
    draws: int | None,
    workers: int | None,
    scheduler: str | None,
    results: list[ChunkStats | None],
    progress: Progress | None,
) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - dask is an optional extra
        raise ConfigError(
            "parallel simulation needs the dask extra: pip install ductal[dask]"
        ) from exc
    cluster = None
    try:
        if scheduler is not None:
            try:
                client = Client(scheduler, timeout="10s")
            except OSError as exc:
                raise ConfigError(
                    f"cannot reach the Dask scheduler at {scheduler}: {exc}"
                ) from None
        else:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                silence_logs=50,
            )
            client = Client(cluster)
        with client:
            plan_f = client.scatter(plan, broadcast=True)
            futures = {
                client.submit(_run_task, plan_f, rates[t.scenario], t, seed, draws, pure=False): i
                for i, t in enumerate(tasks)
            }
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if progress:
                    progress(tasks[i].trials)
    finally:
        if cluster is not None:
            cluster.close()
