"""One proportion: exact (Clopper–Pearson) and Wilson intervals, exact binomial test.

The intervals and the test follow R's ``binom.test`` and ``prop.test``:

* Clopper–Pearson: beta quantiles, the bound is 0 (1) when there are no events (no non-events).
* Wilson score interval, optionally with Yates' continuity correction (Newcombe 1998, methods 3
  and 4). With correction it equals ``prop.test(x, n)``'s interval whenever ``|x − n/2| ≥ 1/2``;
  R shrinks the correction towards its default null value 0.5, which ductal does not do.
* Two-sided exact p-value: the sum of the probabilities of every outcome no more likely than the
  observed one, with R's relative tolerance of 1e-7.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from scipy import stats as st

from ductal.stats import _validate as v
from ductal.stats._json import jsonable

IntervalMethod = Literal["clopper-pearson", "wilson", "wilson-cc"]
Alternative = Literal["two-sided", "greater", "less"]

METHOD_NAMES: dict[str, str] = {
    "clopper-pearson": "Clopper-Pearson exact",
    "wilson": "Wilson score",
    "wilson-cc": "Wilson score with continuity correction",
}
_WHAT = "a proportion"


@dataclass(frozen=True)
class ProportionResult:
    """A proportion with its confidence interval and, if asked, an exact test against a rate."""

    events: int
    n: int
    estimate: float
    lower: float
    upper: float
    conf_level: float
    method: str
    benchmark: float | None = None
    alternative: Alternative = "two-sided"
    p_value: float | None = None
    test_method: str | None = None

    @property
    def summary(self) -> pd.DataFrame:
        """One row: events, n, estimate, interval, method and (with a benchmark) the test."""
        return pd.DataFrame([self.to_dict()])

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values (missing numbers are ``None``)."""
        return jsonable(
            {
                "events": self.events,
                "n": self.n,
                "estimate": self.estimate,
                "lower": self.lower,
                "upper": self.upper,
                "conf_level": self.conf_level,
                "method": self.method,
                "benchmark": self.benchmark,
                "alternative": self.alternative if self.benchmark is not None else None,
                "p_value": self.p_value,
                "test_method": self.test_method,
            }
        )


def clopper_pearson(events: int, n: int, conf_level: float = 0.95) -> tuple[float, float]:
    """Return the exact (Clopper–Pearson) two-sided interval for ``events``/``n``."""
    alpha = 1 - conf_level
    lower = 0.0 if events == 0 else float(st.beta.ppf(alpha / 2, events, n - events + 1))
    upper = 1.0 if events == n else float(st.beta.ppf(1 - alpha / 2, events + 1, n - events))
    return lower, upper


def wilson(
    events: int, n: int, conf_level: float = 0.95, *, correction: bool = False
) -> tuple[float, float]:
    """Return the Wilson score interval, with Yates' continuity correction if asked."""
    z = float(st.norm.ppf(1 - (1 - conf_level) / 2))
    p = events / n
    cc = 0.5 / n if correction else 0.0

    def bound(pc: float, sign: int) -> float:
        z22n = z * z / (2 * n)
        root = math.sqrt(pc * (1 - pc) / n + z22n / (2 * n))
        return (pc + z22n + sign * z * root) / (1 + 2 * z22n)

    lower = 0.0 if p - cc <= 0 else bound(p - cc, -1)
    upper = 1.0 if p + cc >= 1 else bound(p + cc, +1)
    return lower, upper


def binomial_test(
    events: int, n: int, rate: float, alternative: Alternative = "two-sided"
) -> float:
    """Return the exact binomial test p-value of ``events``/``n`` against ``rate`` (as R)."""
    dist = st.binom(n, rate)
    if alternative == "less":
        return float(dist.cdf(events))
    if alternative == "greater":
        return float(dist.sf(events - 1))
    observed = float(dist.pmf(events))
    expected = n * rate
    if events == expected:
        return 1.0
    tolerance = 1 + 1e-7
    if events < expected:
        k = range(math.ceil(expected), n + 1)
        y = sum(1 for i in k if dist.pmf(i) <= observed * tolerance)
        p = dist.cdf(events) + dist.sf(n - y)
    else:
        k = range(0, math.floor(expected) + 1)
        y = sum(1 for i in k if dist.pmf(i) <= observed * tolerance)
        p = dist.cdf(y - 1) + dist.sf(events - 1)
    return float(min(1.0, p))


def proportion(
    events: int,
    n: int,
    *,
    method: IntervalMethod = "clopper-pearson",
    conf_level: float = 0.95,
    benchmark: float | None = None,
    alternative: Alternative = "two-sided",
) -> ProportionResult:
    """Return ``events``/``n`` with its interval and, given a benchmark rate, an exact test.

    ``alternative="greater"`` tests whether the true rate exceeds the benchmark (e.g. a CR rate
    better than the 63% of corticosteroids). The interval is always two-sided.
    """
    n = v.count(n, "n", what=_WHAT, minimum=1)
    events = v.count(events, "events", what=_WHAT)
    if events > n:
        raise v.fail("events", f"must not exceed n ({events} > {n})", what=_WHAT)
    conf_level = v.probability(conf_level, "conf_level", what=_WHAT)
    v.choice(method, list(METHOD_NAMES), "method", what=_WHAT)
    v.choice(alternative, ["two-sided", "greater", "less"], "alternative", what=_WHAT)
    if method == "clopper-pearson":
        lower, upper = clopper_pearson(events, n, conf_level)
    else:
        lower, upper = wilson(events, n, conf_level, correction=method == "wilson-cc")
    p_value = test_method = None
    if benchmark is not None:
        benchmark = v.probability(benchmark, "benchmark", what=_WHAT)
        p_value = binomial_test(events, n, benchmark, alternative)
        test_method = f"exact binomial test, {alternative}"
    return ProportionResult(
        events=events,
        n=n,
        estimate=events / n,
        lower=lower,
        upper=upper,
        conf_level=conf_level,
        method=METHOD_NAMES[method],
        benchmark=benchmark,
        alternative=alternative,
        p_value=p_value,
        test_method=test_method,
    )
