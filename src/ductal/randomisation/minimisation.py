"""Pure Pocock–Simon minimisation with a random element.

For a new subject with levels ``l_f`` of the factors f, and each candidate arm k, the counts of
earlier subjects with level ``l_f`` in every arm are taken as if the new subject joined arm k
(counts are divided by the arm's allocation ratio, so unequal allocation is balanced in
proportion). The imbalance of factor f is the range (max − min) or the variance of those counts;
the score G_k is the weighted sum over factors. The arm with the smallest score — one chosen at
random among ties — is assigned with probability ``p``; otherwise one of the other arms, chosen at
random. When every arm scores the same the arm is drawn in proportion to the ratios.

Pocock SJ, Simon R. Sequential treatment assignment with balancing for prognostic factors in the
controlled clinical trial. Biometrics 1975;31:103–115.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ductal.errors import Problem, ValidationError

Imbalance = Literal["range", "variance"]
IMBALANCE_MEASURES: tuple[Imbalance, ...] = ("range", "variance")


@dataclass(frozen=True)
class MinimisationChoice:
    """The arm chosen, every candidate's score, and how the random element went."""

    arm: str
    scores: dict[str, float]
    minimising: tuple[str, ...]
    followed: bool  # True when the arm is a minimising one (or all arms tied)
    draw: float  # the uniform draw compared with the probability


def imbalance_scores(
    *,
    arms: Sequence[str],
    previous: Sequence[tuple[Mapping[str, str], str]],
    new: Mapping[str, str],
    ratios: Mapping[str, int] | None = None,
    measure: Imbalance = "range",
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Return the Pocock–Simon score G_k of each candidate arm for a new subject.

    ``previous`` holds (factor levels, arm) of the subjects already assigned; subjects in arms
    that are not candidates (closed arms) do not count.
    """
    if measure not in IMBALANCE_MEASURES:
        raise ValidationError(
            "unknown imbalance measure",
            problems=[Problem("imbalance", f"must be one of {', '.join(IMBALANCE_MEASURES)}")],
        )
    if not arms:
        raise ValidationError("no arms", problems=[Problem("arms", "at least one is needed")])
    index = {arm: i for i, arm in enumerate(arms)}
    scale = np.array([1.0 / (ratios or {}).get(arm, 1) for arm in arms])
    scores = dict.fromkeys(arms, 0.0)
    for factor, level in new.items():
        counts = np.zeros(len(arms))
        for levels, arm in previous:
            if arm in index and levels.get(factor) == level:
                counts[index[arm]] += 1
        weight = 1.0 if weights is None else float(weights.get(factor, 1.0))
        for arm, k in index.items():
            trial = counts.copy()
            trial[k] += 1
            trial *= scale
            spread = (
                np.ptp(trial)
                if measure == "range"
                else np.var(trial, ddof=1 if len(arms) > 1 else 0)
            )
            scores[arm] += weight * float(spread)
    return scores


def minimise(
    *,
    arms: Sequence[str],
    previous: Sequence[tuple[Mapping[str, str], str]],
    new: Mapping[str, str],
    probability: float,
    rng: np.random.Generator,
    ratios: Mapping[str, int] | None = None,
    measure: Imbalance = "range",
    weights: Mapping[str, float] | None = None,
) -> MinimisationChoice:
    """Return the arm for a new subject by minimisation, with the random element drawn from ``rng``.

    The generator is used the same way every time (one uniform draw, then one integer draw), so
    a given seed and order of randomisation always reproduce the same arms.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValidationError(
            "bad probability", problems=[Problem("probability", "must be between 0 and 1")]
        )
    scores = imbalance_scores(
        arms=arms, previous=previous, new=new, ratios=ratios, measure=measure, weights=weights
    )
    best = min(scores.values())
    # scores are sums of a few exact fractions; a tolerance keeps float noise from breaking ties
    minimising = tuple(a for a in arms if scores[a] <= best + 1e-9)
    draw = float(rng.random())
    if len(minimising) == len(arms):
        weight = np.array([(ratios or {}).get(a, 1) for a in arms], dtype=float)
        pick = int(rng.choice(len(arms), p=weight / weight.sum()))
        return MinimisationChoice(arms[pick], scores, minimising, True, draw)
    followed = draw < probability
    pool = minimising if followed else tuple(a for a in arms if a not in minimising)
    arm = pool[int(rng.integers(len(pool)))]
    return MinimisationChoice(arm, scores, minimising, followed, draw)
