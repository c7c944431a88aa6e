"""Single-arm exact binomial designs: the smallest n and critical count for given error rates.

The test rejects H0: p <= p0 when the number of responders X exceeds ``r`` (so ``r`` is the
largest count that still declares the treatment ineffective, the convention of Simon 1989 and of
clinfun's ``ph2single``; ``r + 1`` responders are needed). Exact power is not monotone in n
(it saw-tooths), so besides the smallest feasible n the result lists every feasible n up to a
maximum and the smallest n from which every larger n (up to that maximum) is also feasible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ductal.design import _checks
from ductal.errors import Problem, ValidationError

_TOL = 1e-12


@dataclass(frozen=True)
class BinomialTest:
    """One exact single-stage design: reject H0 when more than ``r`` of ``n`` respond."""

    n: int
    r: int
    alpha: float
    power: float

    @property
    def critical(self) -> int:
        """Return the number of responders needed to reject H0 (``r + 1``)."""
        return self.r + 1


@dataclass(frozen=True)
class SingleArmDesign:
    """The smallest feasible exact design and every feasible n up to ``nmax``."""

    p0: float
    p1: float
    alpha_target: float
    power_target: float
    design: BinomialTest
    n_stable: int | None
    nmax: int
    feasible: list[BinomialTest] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: ``n``, ``r``, ``alpha``, ``power`` at the top level."""
        return {
            "n": self.design.n,
            "r": self.design.r,
            "critical": self.design.critical,
            "alpha": self.design.alpha,
            "power": self.design.power,
            "p0": self.p0,
            "p1": self.p1,
            "alpha_target": self.alpha_target,
            "power_target": self.power_target,
            "n_stable": self.n_stable,
            "nmax": self.nmax,
            "feasible": [asdict(d) for d in self.feasible],
            "method": "exact binomial; reject H0 when responders > r",
        }


def best_test(n: int, p0: float, p1: float, alpha: float) -> BinomialTest:
    """Return the most powerful exact test with n patients whose size does not exceed alpha."""
    k = np.arange(n + 1)
    size = stats.binom.sf(k, n, p0)  # P(X > k | p0), decreasing in k
    r = int(np.argmax(size <= alpha + _TOL))
    return BinomialTest(n=n, r=r, alpha=float(size[r]), power=float(stats.binom.sf(r, n, p1)))


def single_arm(
    p0: float, p1: float, alpha: float = 0.05, power: float = 0.8, *, nmax: int | None = None
) -> SingleArmDesign:
    """Return the smallest exact single-arm design with size <= alpha and power >= ``power``.

    ``nmax`` bounds the search (default: twice the normal-approximation sample size, at least 50);
    a ValidationError says so when no n up to it meets the constraints.
    """
    _checks.error_rates(p0, p1, alpha, power, what="single-arm design")
    if nmax is None:
        z = stats.norm.ppf(1 - alpha) * np.sqrt(p0 * (1 - p0)) + stats.norm.ppf(power) * np.sqrt(
            p1 * (1 - p1)
        )
        nmax = max(50, int(2 * np.ceil((z / (p1 - p0)) ** 2)))
    problems: list[Problem] = []
    _checks.positive_int("nmax", nmax, problems)
    _checks.raise_if(problems, "single-arm design")

    tests = [best_test(n, p0, p1, alpha) for n in range(1, nmax + 1)]
    ok = [t.power >= power - _TOL and t.alpha <= alpha + _TOL for t in tests]
    feasible = [t for t, good in zip(tests, ok, strict=True) if good]
    if not feasible:
        raise ValidationError(
            "no single-arm design meets the constraints",
            problems=[Problem("nmax", f"no n up to {nmax} reaches power {power}; raise nmax")],
        )
    n_stable: int | None = None
    for i in range(len(ok) - 1, -1, -1):
        if not ok[i]:
            break
        n_stable = tests[i].n
    return SingleArmDesign(
        p0=p0,
        p1=p1,
        alpha_target=alpha,
        power_target=power,
        design=feasible[0],
        n_stable=n_stable,
        nmax=nmax,
        feasible=feasible,
    )
