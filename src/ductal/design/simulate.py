"""Vectorised simulation of adaptive multi-arm trials with binary outcomes.

One call of :func:`simulate_chunk` runs a block of trials of one scenario side by side in NumPy
arrays: between looks the new patients are allocated among the active arms, their outcomes drawn,
the posteriors updated and the rules of :mod:`ductal.design.rules` applied. It returns sums and
counts only (:class:`ChunkStats`), so chunks from any number of workers add up to the same
operating characteristics (see :mod:`ductal.design.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ductal.design import rules as R
from ductal.design.rules import Plan


@dataclass
class ChunkStats:
    """Counts and sums over a block of simulated trials of one scenario."""

    trials: int
    success: int
    selected: np.ndarray  # (K,) times each arm was selected
    selected_by_look: np.ndarray  # (K, looks)
    selected_best: int  # selected arm had the highest true rate
    efficacious: np.ndarray  # (K,)
    dropped: np.ndarray  # (K, looks, 3): inadequate response, inferiority, not among the best
    stop_look: np.ndarray  # (looks,)
    stop_reason: np.ndarray  # (5,) indexed by the codes in rules
    n_hist: np.ndarray  # (K, max_n + 1)
    total_hist: np.ndarray  # (max_n + 1,)
    est_count: np.ndarray  # (K,) trials in which the arm had any patient
    est_sum: np.ndarray  # (K,) sum of final x / n
    est_sq: np.ndarray  # (K,) sum of squared errors of x / n
    post_sum: np.ndarray  # (K,) sum of final posterior means
    sel_est_sum: np.ndarray  # (K,) sum of x / n when the arm was selected

    def __add__(self, other: ChunkStats) -> ChunkStats:
        return ChunkStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )


def _allocate(probs: np.ndarray, new: int, rng: np.random.Generator, balanced: bool) -> np.ndarray:
    """Return patients per arm for ``new`` patients, as close to ``probs`` as whole patients allow.

    balanced: floor of the expected counts plus the remainder to the largest fractional parts
    (ties at random); simple: a multinomial draw per trial.
    """
    if not balanced:
        return rng.multinomial(new, probs)
    expected = probs * new
    base = np.floor(expected + 1e-9)
    frac = np.where(probs > 0, expected - base, -1.0)
    remainder = new - base.sum(axis=1)
    key = frac + rng.random(probs.shape) * 1e-7
    rank = np.argsort(np.argsort(-key, axis=1), axis=1)
    return (base + (rank < remainder[:, None])).astype(np.int64)


def simulate_chunk(
    plan: Plan,
    rates: np.ndarray,
    trials: int,
    seed: np.random.SeedSequence,
    draws: int | None = None,
) -> ChunkStats:
    """Return the statistics of ``trials`` simulated trials with true response ``rates``.

    The outcome stream and the Monte Carlo posterior stream (``draws``) come from two children
    of ``seed``, so switching the posterior method does not change the simulated data.
    """
    data_seed, draw_seed = seed.spawn(2)
    rng = np.random.Generator(np.random.PCG64(data_seed))
    draw_rng = np.random.Generator(np.random.PCG64(draw_seed))
    k, looks = plan.k, plan.looks
    n_looks = len(looks)
    rates = np.asarray(rates, dtype=float)
    n = np.zeros((trials, k), dtype=np.int64)
    x = np.zeros((trials, k), dtype=np.int64)
    active = np.ones((trials, k), dtype=bool)
    probs = np.tile(plan.ratio, (trials, 1))
    running = np.ones(trials, dtype=bool)
    stop_look = np.zeros(trials, dtype=np.int64)
    stop_reason = np.zeros(trials, dtype=np.int64)
    selected = np.full(trials, -1, dtype=np.int64)
    dropped = np.zeros((k, n_looks, 3), dtype=np.int64)
    efficacious = np.zeros((trials, k), dtype=bool)
    ni_success = np.zeros(trials, dtype=bool)
    previous = 0
    for look_index, look in enumerate(looks):
        idx = np.flatnonzero(running)
        if idx.size == 0:
            break
        final = look_index == n_looks - 1
        counts = _allocate(probs[idx], int(look) - previous, rng, plan.balanced)
        previous = int(look)
        n[idx] += counts
        x[idx] += rng.binomial(counts, rates)
        act = active[idx]
        above, best = R.posteriors(plan, x[idx], n[idx], act, draws=draws, rng=draw_rng)
        mean = None
        if plan.keep_best is not None:
            mean = (plan.a0 + x[idx]) / (plan.a0 + plan.b0 + n[idx])
        res = R.decide(plan, act, above, best, final=final, mean=mean, rng=rng)
        for reason in (R.INADEQUATE, R.INFERIOR, R.NOT_BEST):
            dropped[:, look_index, reason - 1] += (res.drop == reason).sum(axis=0)
        act = act & (res.drop == R.KEPT)
        active[idx] = act
        stopping = res.stop != R.CONTINUE
        stop_idx = idx[stopping]
        stop_look[stop_idx] = look_index
        stop_reason[stop_idx] = res.stop[stopping]
        selected[stop_idx] = res.selected[stopping]
        running[stop_idx] = False
        if stop_idx.size:
            _conclude(
                plan, x[stop_idx], n[stop_idx], act[stopping], efficacious, ni_success, stop_idx
            )
        go = ~stopping
        if go.any() and not final:
            p_best = None if res.p_best is None else res.p_best[go]
            probs[idx[go]] = R.allocation(plan, act[go], p_best)

    return _summarise(
        plan, rates, n, x, selected, efficacious, ni_success, dropped, stop_look, stop_reason
    )


def _conclude(
    plan: Plan,
    x: np.ndarray,
    n: np.ndarray,
    active: np.ndarray,
    efficacious: np.ndarray,
    ni_success: np.ndarray,
    rows: np.ndarray,
) -> None:
    """Record the end-of-trial efficacy and non-inferiority conclusions of stopping trials."""
    if plan.efficacy is not None:
        thr, bound = plan.efficacy
        from ductal.design.posterior import prob_above

        p = prob_above(plan.a0 + x, plan.b0 + (n - x), thr)
        efficacious[rows] = active & (p >= bound)
    if plan.noninferiority is not None:
        i, j, _, bound = plan.noninferiority
        ok = active[:, i] & active[:, j]
        ni_success[rows] = ok & (R.prob_noninferior(plan, x, n) >= bound)


def _summarise(
    plan: Plan,
    rates: np.ndarray,
    n: np.ndarray,
    x: np.ndarray,
    selected: np.ndarray,
    efficacious: np.ndarray,
    ni_success: np.ndarray,
    dropped: np.ndarray,
    stop_look: np.ndarray,
    stop_reason: np.ndarray,
) -> ChunkStats:
    trials, k = n.shape
    rows = np.arange(trials)
    has_sel = selected >= 0
    sel = np.where(has_sel, selected, 0)
    if plan.noninferiority is not None:
        success = ni_success
    elif k == 1:
        success = efficacious[:, 0]
    else:
        success = has_sel & ~plan.control[sel]
        if plan.efficacy is not None:
            success &= efficacious[rows, sel]
    max_n = int(plan.looks[-1])
    n_hist = np.bincount(
        (np.arange(k)[None, :] * (max_n + 1) + n).ravel(), minlength=k * (max_n + 1)
    ).reshape(k, max_n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(n > 0, x / np.maximum(n, 1), np.nan)
    seen = n > 0
    post = (plan.a0 + x) / (plan.a0 + plan.b0 + n)
    sel_mask = np.zeros((trials, k), dtype=bool)
    sel_mask[rows[has_sel], selected[has_sel]] = True
    best_arms = rates >= rates.max() - 1e-12
    return ChunkStats(
        trials=trials,
        success=int(success.sum()),
        selected=np.bincount(selected[has_sel], minlength=k).astype(np.int64),
        selected_by_look=np.bincount(
            selected[has_sel] * len(plan.looks) + stop_look[has_sel],
            minlength=k * len(plan.looks),
        )
        .reshape(k, len(plan.looks))
        .astype(np.int64),
        selected_best=int(best_arms[selected[has_sel]].sum()),
        efficacious=efficacious.sum(axis=0).astype(np.int64),
        dropped=dropped,
        stop_look=np.bincount(stop_look, minlength=len(plan.looks)).astype(np.int64),
        stop_reason=np.bincount(stop_reason, minlength=5).astype(np.int64),
        n_hist=n_hist.astype(np.int64),
        total_hist=np.bincount(n.sum(axis=1), minlength=max_n + 1).astype(np.int64),
        est_count=seen.sum(axis=0).astype(np.int64),
        est_sum=np.where(seen, est, 0.0).sum(axis=0),
        est_sq=np.where(seen, (est - rates) ** 2, 0.0).sum(axis=0),
        post_sum=post.sum(axis=0),
        sel_est_sum=np.where(sel_mask & seen, est, 0.0).sum(axis=0),
    )
