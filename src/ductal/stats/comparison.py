"""Two proportions: risk difference (Wald, Newcombe), risk ratio, odds ratio, non-inferiority.

* Wald interval for the difference, without continuity correction (``prop.test(correct=FALSE)``).
* Newcombe's hybrid score interval (Newcombe 1998, method 10), built from two Wilson intervals.
* Risk ratio and odds ratio with Wald intervals on the log scale (Katz; Woolf); undefined (None)
  when a cell is zero, rather than silently adding 0.5.
* Non-inferiority of arm 1 against arm 2 for a margin δ < 0: H0 p1 − p2 ≤ δ, one-sided Wald z-test;
  the verdict is "non-inferior" when the lower bound of the two-sided interval lies above δ.

The published lavage-versus-steroid trial (59/69 vs 62/71, difference −1.8%, 95% CI −13.2 to 9.5)
is reproduced by the Wald interval; Newcombe's interval gives −13.6 to 9.8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from scipy import stats as st

from ductal.stats import _validate as v
from ductal.stats._json import jsonable
from ductal.stats.proportions import wilson

DifferenceMethod = Literal["wald", "newcombe"]
METHOD_NAMES: dict[str, str] = {
    "wald": "risk difference, Wald interval",
    "newcombe": "risk difference, Newcombe hybrid score interval",
}
_WHAT = "two proportions"


@dataclass(frozen=True)
class ComparisonResult:
    """Arm 1 against arm 2: difference, ratio, odds ratio and (with a margin) non-inferiority."""

    events1: int
    n1: int
    events2: int
    n2: int
    estimate: float
    lower: float
    upper: float
    conf_level: float
    method: str
    risk_ratio: float
    risk_ratio_lower: float
    risk_ratio_upper: float
    odds_ratio: float
    odds_ratio_lower: float
    odds_ratio_upper: float
    p_value: float
    test_method: str
    margin: float | None = None
    non_inferior: bool | None = None

    @property
    def proportion1(self) -> float:
        return self.events1 / self.n1

    @property
    def proportion2(self) -> float:
        return self.events2 / self.n2

    @property
    def summary(self) -> pd.DataFrame:
        """One row per measure (difference, risk ratio, odds ratio) with its interval."""
        rows = [
            ("risk difference", self.estimate, self.lower, self.upper, self.method),
            (
                "risk ratio",
                self.risk_ratio,
                self.risk_ratio_lower,
                self.risk_ratio_upper,
                "Wald interval on the log scale",
            ),
            (
                "odds ratio",
                self.odds_ratio,
                self.odds_ratio_lower,
                self.odds_ratio_upper,
                "Wald interval on the log scale",
            ),
        ]
        return pd.DataFrame(rows, columns=["measure", "estimate", "lower", "upper", "method"])

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready values (missing numbers are ``None``)."""
        return jsonable(
            {
                "events1": self.events1,
                "n1": self.n1,
                "events2": self.events2,
                "n2": self.n2,
                "proportion1": self.proportion1,
                "proportion2": self.proportion2,
                "estimate": self.estimate,
                "lower": self.lower,
                "upper": self.upper,
                "conf_level": self.conf_level,
                "method": self.method,
                "p_value": self.p_value,
                "test_method": self.test_method,
                "margin": self.margin,
                "non_inferior": self.non_inferior,
                "risk_ratio": self.risk_ratio,
                "risk_ratio_lower": self.risk_ratio_lower,
                "risk_ratio_upper": self.risk_ratio_upper,
                "odds_ratio": self.odds_ratio,
                "odds_ratio_lower": self.odds_ratio_lower,
                "odds_ratio_upper": self.odds_ratio_upper,
            }
        )


def _log_ratio_interval(estimate: float, se: float, z: float) -> tuple[float, float]:
    if not math.isfinite(se) or estimate <= 0 or not math.isfinite(estimate):
        return math.nan, math.nan
    return estimate * math.exp(-z * se), estimate * math.exp(z * se)


def _safe_div(a: float, b: float) -> float:
    return a / b if b != 0 else math.nan


def compare_proportions(
    events1: int,
    n1: int,
    events2: int,
    n2: int,
    *,
    method: DifferenceMethod = "wald",
    conf_level: float = 0.95,
    margin: float | None = None,
) -> ComparisonResult:
    """Return arm 1 (``events1``/``n1``) compared with arm 2: p1 − p2, p1/p2 and the odds ratio.

    With ``margin`` (a negative difference such as −0.15) ``p_value`` is the one-sided Wald
    p-value of H0 p1 − p2 ≤ margin and ``non_inferior`` the verdict; without it ``p_value`` is the
    two-sided test of equal proportions (Pearson's chi-square, as ``prop.test(correct=FALSE)``).
    """
    n1 = v.count(n1, "n1", what=_WHAT, minimum=1)
    n2 = v.count(n2, "n2", what=_WHAT, minimum=1)
    events1 = v.count(events1, "events1", what=_WHAT)
    events2 = v.count(events2, "events2", what=_WHAT)
    for name, e, n in (("events1", events1, n1), ("events2", events2, n2)):
        if e > n:
            raise v.fail(name, f"must not exceed its n ({e} > {n})", what=_WHAT)
    conf_level = v.probability(conf_level, "conf_level", what=_WHAT)
    v.choice(method, list(METHOD_NAMES), "method", what=_WHAT)
    if margin is not None and not -1 < margin < 1:
        raise v.fail("margin", f"must be a difference between -1 and 1, got {margin}", what=_WHAT)

    z = float(st.norm.ppf(1 - (1 - conf_level) / 2))
    p1, p2 = events1 / n1, events2 / n2
    diff = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    if method == "wald":
        lower, upper = max(-1.0, diff - z * se), min(1.0, diff + z * se)
    else:
        l1, u1 = wilson(events1, n1, conf_level)
        l2, u2 = wilson(events2, n2, conf_level)
        lower = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
        upper = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)

    rr = _safe_div(p1, p2)
    rr_se = (
        math.sqrt(1 / events1 - 1 / n1 + 1 / events2 - 1 / n2)
        if events1 > 0 and events2 > 0
        else math.nan
    )
    a, b, c, d = events1, n1 - events1, events2, n2 - events2
    odds = _safe_div(a * d, b * c) if min(a, b, c, d) > 0 else math.nan
    or_se = math.sqrt(1 / a + 1 / b + 1 / c + 1 / d) if min(a, b, c, d) > 0 else math.nan

    non_inferior: bool | None = None
    if margin is not None:
        zstat = (diff - margin) / se if se > 0 else math.copysign(math.inf, diff - margin)
        p_value = float(st.norm.sf(zstat))
        non_inferior = bool(lower > margin)
        test_method = f"non-inferiority, one-sided Wald z-test, margin {margin:g}"
    else:
        pooled = (events1 + events2) / (n1 + n2)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        p_value = float(2 * st.norm.sf(abs(diff) / se0)) if se0 > 0 else math.nan
        test_method = "Pearson chi-square test of equal proportions, no continuity correction"

    return ComparisonResult(
        events1=events1,
        n1=n1,
        events2=events2,
        n2=n2,
        estimate=diff,
        lower=lower,
        upper=upper,
        conf_level=conf_level,
        method=METHOD_NAMES[method],
        risk_ratio=rr,
        risk_ratio_lower=_log_ratio_interval(rr, rr_se, z)[0],
        risk_ratio_upper=_log_ratio_interval(rr, rr_se, z)[1],
        odds_ratio=odds,
        odds_ratio_lower=_log_ratio_interval(odds, or_se, z)[0],
        odds_ratio_upper=_log_ratio_interval(odds, or_se, z)[1],
        p_value=p_value,
        test_method=test_method,
        margin=margin,
        non_inferior=non_inferior,
    )
