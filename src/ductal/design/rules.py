"""The adaptive rules of a design, applied at one look to many trials at once.

:func:`decide` is shared by the simulator and by :func:`assess_arms`, the pure function an
interim analysis calls with the observed (responders, n) of each arm, so that a live trial and
its simulated operating characteristics follow exactly the same rules:

1. superiority: if at least two arms are active and the largest P(best) reaches the bound
   (``final_bound`` at the final look), stop and select that arm;
2. inadequate response: drop an active arm whose P(rate > threshold) is below the bound;
3. inferiority: drop an active arm (of at least two) whose P(best) is below the bound;
   keep-best (interim looks only): keep the ``arms`` active non-control arms with the highest
   posterior mean (ties broken at random in simulation, as rpact does; to the arm listed first
   in :func:`assess_arms`) and drop the other non-control arms;
4. if no arm is left the trial stops; if one is left of several it is selected, and the
   trial stops at once when ``stop_when_one_arm_left`` (otherwise at the final look).

P(best) is computed among the arms active at the start of the look.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ductal.design import posterior
from ductal.design.spec import AdaptiveDesign
from ductal.errors import Problem, ValidationError

CONTINUE, SUPERIORITY, LAST_ARM, ALL_DROPPED, FINAL = 0, 1, 2, 3, 4
STOP_REASONS = {
    SUPERIORITY: "superiority",
    LAST_ARM: "one arm left",
    ALL_DROPPED: "all arms dropped",
    FINAL: "final look reached",
}
KEPT, INADEQUATE, INFERIOR, NOT_BEST = 0, 1, 2, 3
DROP_REASONS = {
    INADEQUATE: "inadequate response",
    INFERIOR: "inferiority",
    NOT_BEST: "not among the best arms",
}


@dataclass(frozen=True)
class Plan:
    """A design compiled to arrays for the vectorised engine (picklable for Dask workers)."""

    name: str
    arm_ids: tuple[str, ...]
    a0: np.ndarray
    b0: np.ndarray
    ratio: np.ndarray
    control: np.ndarray
    looks: np.ndarray
    adaptive: bool
    softening: float
    min_probability: float
    max_probability: float
    balanced: bool
    inadequate: tuple[float, float] | None
    inferiority: float | None
    superiority: tuple[float, float] | None
    efficacy: tuple[float, float] | None
    noninferiority: tuple[int, int, float, float] | None
    stop_when_one_arm_left: bool
    keep_best: int | None = None

    @property
    def k(self) -> int:
        """Return the number of arms."""
        return len(self.arm_ids)

    @property
    def comparative(self) -> bool:
        """Return whether any rule or the allocation needs P(best)."""
        return self.k > 1 and (
            self.adaptive or self.inferiority is not None or self.superiority is not None
        )


def compile_design(design: AdaptiveDesign) -> Plan:
    """Return the design as arrays for :func:`decide` and the simulator."""
    rules = design.rules
    ids = tuple(design.arm_ids)
    priors = [design.prior_of(arm) for arm in design.arms]
    ratio = np.array([arm.ratio for arm in design.arms], dtype=float)
    ni = rules.noninferiority
    sup = rules.superiority
    return Plan(
        name=design.name,
        arm_ids=ids,
        a0=np.array([p.a for p in priors], dtype=float),
        b0=np.array([p.b for p in priors], dtype=float),
        ratio=ratio / ratio.sum(),
        control=np.array([arm.control for arm in design.arms], dtype=bool),
        looks=np.array(design.looks, dtype=np.int64),
        adaptive=design.allocation.type == "response-adaptive",
        softening=design.allocation.softening,
        min_probability=design.allocation.min_probability,
        max_probability=design.allocation.max_probability,
        balanced=design.allocation.randomisation == "balanced",
        inadequate=(
            None
            if rules.inadequate_response is None
            else (rules.inadequate_response.threshold, rules.inadequate_response.bound)
        ),
        inferiority=None if rules.inferiority is None else rules.inferiority.bound,
        superiority=None if sup is None else (sup.bound, sup.final_bound or sup.bound),
        efficacy=None
        if rules.efficacy is None
        else (rules.efficacy.threshold, rules.efficacy.bound),
        noninferiority=(
            None
            if ni is None
            else (ids.index(ni.arm), ids.index(ni.reference), ni.margin, ni.bound)
        ),
        stop_when_one_arm_left=rules.stop_when_one_arm_left,
        keep_best=None if rules.keep_best is None else rules.keep_best.arms,
    )


@dataclass
class LookResult:
    """What the rules concluded at one look, per trial (rows) and arm (columns)."""

    p_above: np.ndarray | None
    p_best: np.ndarray | None
    drop: np.ndarray
    stop: np.ndarray
    selected: np.ndarray


def posteriors(
    plan: Plan,
    x: np.ndarray,
    n: np.ndarray,
    active: np.ndarray,
    *,
    draws: int | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Return (P(rate > inadequacy threshold), P(best)) as the rules need them, else None."""
    a = plan.a0 + x
    b = plan.b0 + (n - x)
    threshold = None if plan.inadequate is None else plan.inadequate[0]
    if draws is not None:
        if rng is None:
            raise ValueError("Monte Carlo posteriors need a Generator")
        mc_above, mc_best = posterior.monte_carlo(a, b, active, threshold, draws, rng)
        return mc_above, (mc_best if plan.comparative else None)
    above = None
    if threshold is not None:
        if np.issubdtype(np.asarray(x).dtype, np.integer):
            above = posterior.prob_above_counts(plan.a0, plan.b0, x, n, threshold)
        else:
            above = posterior.prob_above(a, b, threshold)
    best = posterior.prob_best_counts(plan.a0, plan.b0, x, n, active) if plan.comparative else None
    return above, best


def decide(
    plan: Plan,
    active: np.ndarray,
    p_above: np.ndarray | None,
    p_best: np.ndarray | None,
    *,
    final: bool,
    mean: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> LookResult:
    """Apply the rules at one look; ``active`` is the arms still in each trial before it.

    ``mean`` (posterior means) is needed only by the keep-best rule, which breaks ties at random
    with ``rng`` (as rpact does) or, without one, in favour of the arm listed first.
    """
    m, k = active.shape
    rows = np.arange(m)
    n_active = active.sum(axis=1)
    stop = np.zeros(m, dtype=np.int8)
    selected = np.full(m, -1, dtype=np.int64)
    drop = np.zeros((m, k), dtype=np.int8)
    if plan.superiority is not None and p_best is not None:
        bound = plan.superiority[1] if final else plan.superiority[0]
        candidate = np.where(active, p_best, -1.0)
        best = candidate.argmax(axis=1)
        hit = (n_active >= 2) & (candidate[rows, best] >= bound)
        selected[hit] = best[hit]
        stop[hit] = SUPERIORITY
    going = (stop == CONTINUE)[:, None]
    if plan.inadequate is not None and p_above is not None:
        drop[active & going & (p_above < plan.inadequate[1])] = INADEQUATE
    if plan.inferiority is not None and p_best is not None:
        several = (n_active >= 2)[:, None]
        mask = active & going & several & (drop == KEPT) & (p_best < plan.inferiority)
        drop[mask] = INFERIOR
    if plan.keep_best is not None and mean is not None and not final:
        candidate = active & going & (drop == KEPT) & ~plan.control
        score = np.where(candidate, mean, -np.inf)
        ties = np.zeros(score.shape) if rng is None else rng.random(score.shape)
        order = np.lexsort((ties, -score), axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(k)[None, :], axis=1)
        drop[candidate & (rank >= plan.keep_best)] = NOT_BEST
    left = active & (drop == KEPT)
    n_left = left.sum(axis=1)
    cont = stop == CONTINUE
    stop[cont & (n_left == 0)] = ALL_DROPPED
    if k > 1:
        last = cont & (n_left == 1) & (plan.stop_when_one_arm_left or final)
        selected[last] = left[last].argmax(axis=1)
        stop[last] = LAST_ARM
    if final:
        stop[stop == CONTINUE] = FINAL
    return LookResult(p_above=p_above, p_best=p_best, drop=drop, stop=stop, selected=selected)


def allocation(plan: Plan, active: np.ndarray, p_best: np.ndarray | None) -> np.ndarray:
    """Return the allocation probabilities for the next patients (rows sum to one).

    Fixed: the arms' ratios renormalised over the active arms. Response-adaptive: P(best) raised
    to the softening power, renormalised, then held within [min, max] probability by fixing the
    arms outside the bounds and rescaling the others (repeated until none is outside).
    """
    if not plan.adaptive or p_best is None:
        w = np.where(active, plan.ratio, 0.0)
        return np.asarray(w / w.sum(axis=1, keepdims=True))
    w = np.where(active, np.power(np.where(active, p_best, 0.0), plan.softening), 0.0)
    total = w.sum(axis=1, keepdims=True)
    even = active / np.maximum(active.sum(axis=1, keepdims=True), 1)
    probs = np.where(total > 0, w / np.where(total > 0, total, 1.0), even)
    lo, hi = plan.min_probability, plan.max_probability
    fixed = np.zeros_like(active)
    for _ in range(plan.k):
        under = active & ~fixed & (probs < lo)
        over = active & ~fixed & (probs > hi)
        if not (under.any() or over.any()):
            break
        probs = np.where(under, lo, np.where(over, hi, probs))
        fixed |= under | over
        free = active & ~fixed
        room = 1.0 - np.where(fixed, probs, 0.0).sum(axis=1, keepdims=True)
        free_sum = np.where(free, probs, 0.0).sum(axis=1, keepdims=True)
        scale = np.divide(room, free_sum, out=np.ones_like(room), where=free_sum > 0)
        probs = np.where(free, probs * scale, probs)
    probs = np.where(active, probs, 0.0)
    return np.asarray(probs / probs.sum(axis=1, keepdims=True))


def prob_noninferior(plan: Plan, x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Return P(p_arm - p_reference > -margin) for each row, by Simpson's rule."""
    assert plan.noninferiority is not None
    i, j, margin, _ = plan.noninferiority
    a = plan.a0 + x
    b = plan.b0 + (n - x)
    return posterior.prob_difference_above(a[:, i], b[:, i], a[:, j], b[:, j], -margin)


Recommendation = Literal["keep", "drop", "select"]


@dataclass(frozen=True)
class ArmAssessment:
    """The posterior of one arm at a look and what the design's rules recommend for it."""

    arm: str
    responders: int
    n: int
    posterior_a: float
    posterior_b: float
    posterior_mean: float
    p_above_threshold: float | None
    p_best: float | None
    recommendation: Recommendation
    reason: str


def assess_arms(
    design: AdaptiveDesign,
    counts: Mapping[str, tuple[int, int]],
    *,
    active: set[str] | None = None,
    final: bool = False,
) -> list[ArmAssessment]:
    """Return each arm's posterior probabilities and a keep/drop/select recommendation.

    ``counts`` maps every arm id to (responders, n). ``active`` lists the arms still
    randomising (default: all). The rules are exactly those of the simulator (:func:`decide`),
    with the design's Beta priors; ``final`` applies the final-look bound and selection.
    """
    plan = compile_design(design)
    problems: list[Problem] = []
    for arm_id in plan.arm_ids:
        if arm_id not in counts:
            problems.append(Problem(f"counts.{arm_id}", "no counts for this arm"))
            continue
        x_i, n_i = counts[arm_id]
        if not (0 <= x_i <= n_i):
            problems.append(
                Problem(f"counts.{arm_id}", f"need 0 <= responders <= n, got {x_i}/{n_i}")
            )
    for arm_id in counts:
        if arm_id not in plan.arm_ids:
            problems.append(Problem(f"counts.{arm_id}", "no such arm in the design"))
    for arm_id in active or set():
        if arm_id not in plan.arm_ids:
            problems.append(Problem(f"active.{arm_id}", "no such arm in the design"))
    if problems:
        raise ValidationError("invalid interim counts", problems=problems)
    x = np.array([[counts[a][0] for a in plan.arm_ids]], dtype=float)
    n = np.array([[counts[a][1] for a in plan.arm_ids]], dtype=float)
    act = np.array([[active is None or a in active for a in plan.arm_ids]])
    above, best = posteriors(plan, x, n, act)
    mean = (plan.a0 + x) / (plan.a0 + plan.b0 + n)
    result = decide(plan, act, above, best, final=final, mean=mean)
    out: list[ArmAssessment] = []
    stop = int(result.stop[0])
    for i, arm_id in enumerate(plan.arm_ids):
        a_post = float(plan.a0[i] + x[0, i])
        b_post = float(plan.b0[i] + n[0, i] - x[0, i])
        rec: Recommendation
        if not act[0, i]:
            rec, reason = "drop", "already dropped"
        elif int(result.drop[0, i]) != KEPT:
            rec = "drop"
            reason = _drop_reason(plan, int(result.drop[0, i]))
        elif int(result.selected[0]) == i:
            rec, reason = "select", STOP_REASONS[stop]
        elif stop == SUPERIORITY:
            rec, reason = "drop", "another arm is superior"
        else:
            rec, reason = "keep", "no rule met"
        out.append(
            ArmAssessment(
                arm=arm_id,
                responders=int(x[0, i]),
                n=int(n[0, i]),
                posterior_a=a_post,
                posterior_b=b_post,
                posterior_mean=a_post / (a_post + b_post),
                p_above_threshold=None if above is None else float(above[0, i]),
                p_best=None if best is None else float(best[0, i]),
                recommendation=rec,
                reason=reason,
            )
        )
    return out


def _drop_reason(plan: Plan, code: int) -> str:
    if code == INADEQUATE and plan.inadequate is not None:
        thr, bound = plan.inadequate
        return f"inadequate response: P(rate > {thr}) < {bound}"
    if code == INFERIOR and plan.inferiority is not None:
        return f"inferiority: P(best) < {plan.inferiority}"
    if code == NOT_BEST and plan.keep_best is not None:
        return f"not among the {plan.keep_best} best arms by posterior mean"
    return DROP_REASONS.get(code, "dropped")


def describe(assessments: list[ArmAssessment]) -> list[dict[str, Any]]:
    """Return the assessments as JSON-ready dicts."""
    return [a.__dict__.copy() for a in assessments]
