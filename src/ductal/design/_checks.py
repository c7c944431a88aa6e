"""Input checks shared by the design calculations: each failure names its field."""

from __future__ import annotations

import math

from ductal.errors import Problem, ValidationError


def probability(field: str, value: float, problems: list[Problem]) -> None:
    """Append a problem unless ``value`` lies strictly between 0 and 1."""
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 < value < 1.0):
        problems.append(
            Problem(field, f"must be a probability strictly between 0 and 1, got {value}")
        )


def positive_int(field: str, value: int, problems: list[Problem]) -> None:
    """Append a problem unless ``value`` is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(Problem(field, f"must be a whole number of at least 1, got {value}"))


def raise_if(problems: list[Problem], what: str) -> None:
    """Raise one ValidationError carrying every problem found, if there are any."""
    if problems:
        raise ValidationError(f"invalid {what}", problems=problems)


def error_rates(
    p0: float, p1: float, alpha: float, power: float, *, what: str, power_field: str = "power"
) -> None:
    """Check the usual (p0, p1, alpha, power) quadruple of a one-sample design."""
    problems: list[Problem] = []
    probability("p0", p0, problems)
    probability("p1", p1, problems)
    probability("alpha", alpha, problems)
    probability(power_field, power, problems)
    if not problems and p1 <= p0:
        problems.append(Problem("p1", f"must exceed p0 ({p0}), got {p1}"))
    if not problems and power <= alpha and power_field == "power":
        problems.append(Problem("power", f"must exceed alpha ({alpha}), got {power}"))
    raise_if(problems, what)
