"""Sample size for comparing two proportions: superiority or non-inferiority, with dropout.

Hypotheses are on the difference p1 - p2 (arm 1 the experimental arm, arm 2 the reference),
with a one-sided ``alpha``. Superiority tests H0: p1 - p2 <= 0; non-inferiority with margin
``m`` > 0 tests H0: p1 - p2 <= -m. Two normal-approximation methods (1:1 allocation):

* ``wald`` (default): unpooled variance under both hypotheses,
  n = (z_{1-alpha} + z_{1-beta})^2 [p1(1-p1) + p2(1-p2)] / (p1 - p2 + m)^2 per arm
  (Chow, Shao & Wang, *Sample Size Calculations in Clinical Research*, 2nd ed., sections 4.2-4.3).
* ``farrington-manning``: the variance under H0 at the restricted maximum-likelihood rates of
  Farrington & Manning (1990); with m = 0 this is the pooled-variance formula. This is what
  ``rpact::getSampleSizeRates`` uses.

The evaluable size is rounded up per arm, then inflated for dropout: ceil(n / (1 - dropout)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from scipy import stats

from ductal.design import _checks
from ductal.errors import Problem

Method = Literal["wald", "farrington-manning"]
_EPS = 1e-9


@dataclass(frozen=True)
class TwoArmSampleSize:
    """Per-arm and total sample sizes, before and after dropout inflation."""

    p1: float
    p2: float
    margin: float
    alpha: float
    power: float
    dropout: float
    method: str
    n_exact: float
    n_evaluable_per_arm: int
    n_per_arm: int

    @property
    def n_total(self) -> int:
        """Return the number to randomise in both arms together."""
        return 2 * self.n_per_arm

    @property
    def hypothesis(self) -> str:
        """Return 'non-inferiority' or 'superiority'."""
        return "non-inferiority" if self.margin > 0 else "superiority"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with ``n_per_arm`` and ``n_total``."""
        return {
            "n_per_arm": self.n_per_arm,
            "n_total": self.n_total,
            "n_evaluable_per_arm": self.n_evaluable_per_arm,
            "n_evaluable_total": 2 * self.n_evaluable_per_arm,
            "n_exact": self.n_exact,
            "hypothesis": self.hypothesis,
            "p1": self.p1,
            "p2": self.p2,
            "margin": self.margin,
            "alpha_one_sided": self.alpha,
            "power": self.power,
            "dropout": self.dropout,
            "method": self.method,
        }


def restricted_mle(p1: float, p2: float, diff0: float) -> tuple[float, float]:
    """Return Farrington–Manning rates (q1, q2) maximising the likelihood with q1 - q2 = diff0.

    The closed-form root of the score cubic (Farrington & Manning 1990, equal group sizes).
    """
    if diff0 == 0:
        pooled = (p1 + p2) / 2
        return pooled, pooled
    theta = 1.0  # n2 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p2 + diff0 * (theta + 2))
    c = diff0 * diff0 + diff0 * (2 * p1 + theta + 1) + p1 + theta * p2
    d = -p1 * diff0 * (1 + diff0)
    v = b**3 / (27 * a**3) - b * c / (6 * a**2) + d / (2 * a)
    u = math.copysign(math.sqrt(max(b * b / (9 * a * a) - c / (3 * a), 0.0)), v)
    ratio = 0.0 if u == 0 else max(-1.0, min(1.0, v / u**3))
    w = (math.pi + math.acos(ratio)) / 3
    q1 = 2 * u * math.cos(w) - b / (3 * a)
    return q1, q1 - diff0


def two_arm(
    p1: float,
    p2: float,
    *,
    margin: float = 0.0,
    alpha: float = 0.025,
    power: float = 0.8,
    dropout: float = 0.0,
    method: Method = "wald",
) -> TwoArmSampleSize:
    """Return the per-arm sample size to show p1 superior (margin 0) or non-inferior to p2."""
    problems: list[Problem] = []
    _checks.probability("p1", p1, problems)
    _checks.probability("p2", p2, problems)
    _checks.probability("alpha", alpha, problems)
    _checks.probability("power", power, problems)
    if not (0 <= margin < 1):
        problems.append(Problem("margin", f"must be in [0, 1), got {margin}"))
    if not (0 <= dropout < 1):
        problems.append(Problem("dropout", f"must be in [0, 1), got {dropout}"))
    if method not in ("wald", "farrington-manning"):
        problems.append(Problem("method", f"must be wald or farrington-manning, got {method}"))
    if not problems:
        if power <= alpha:
            problems.append(Problem("power", f"must exceed alpha ({alpha}), got {power}"))
        if p1 - p2 + margin <= 0:
            field = "p1" if margin == 0 else "margin"
            problems.append(
                Problem(field, "the true difference p1 - p2 must lie above -margin (H1 inside H0)")
            )
    _checks.raise_if(problems, "two-arm sample size")

    z_a, z_b = stats.norm.ppf(1 - alpha), stats.norm.ppf(power)
    var1 = p1 * (1 - p1) + p2 * (1 - p2)
    effect = p1 - p2 + margin
    if method == "wald":
        n = (z_a + z_b) ** 2 * var1 / effect**2
    else:
        q1, q2 = restricted_mle(p1, p2, -margin)
        var0 = q1 * (1 - q1) + q2 * (1 - q2)
        n = (z_a * math.sqrt(var0) + z_b * math.sqrt(var1)) ** 2 / effect**2
    n_eval = math.ceil(n - _EPS)
    n_arm = math.ceil(n_eval / (1 - dropout) - _EPS)
    return TwoArmSampleSize(
        p1=p1,
        p2=p2,
        margin=margin,
        alpha=alpha,
        power=power,
        dropout=dropout,
        method=method,
        n_exact=float(n),
        n_evaluable_per_arm=n_eval,
        n_per_arm=n_arm,
    )
