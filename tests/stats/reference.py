"""R reference values and datasets written by tests/stats/r/make_fixtures.R (R not needed here)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FIXTURES = Path(__file__).parent / "fixtures"
RTOL = 1e-6


@cache
def reference() -> dict[str, Any]:
    """The whole reference file (R's output), parsed once."""
    with (FIXTURES / "r_reference.json").open() as f:
        data: dict[str, Any] = json.load(f)
    return data


@cache
def dataset(name: str) -> pd.DataFrame:
    """One of the shipped datasets: aml, ovarian, mgus2, tied."""
    return pd.read_csv(FIXTURES / f"{name}.csv")


def arr(values: Any) -> np.ndarray:
    """R's list (with None for NA) as a float array with NaN."""
    if isinstance(values, np.ndarray | pd.Series):
        return np.asarray(values, dtype=float)
    if not isinstance(values, list):
        values = [values]
    return np.array([np.nan if x is None else x for x in values], dtype=float)


def assert_close(actual: Any, expected: Any, *, rtol: float = RTOL, atol: float = 0.0) -> None:
    """Equal within ``rtol`` (relative) or ``atol``, with NaN only where R has NA/NaN."""
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), arr(expected), rtol=rtol, atol=atol, equal_nan=True
    )


def names(values: Any) -> list[str]:
    """R's character vector (a bare string when it had one element) as a list."""
    return [values] if isinstance(values, str) else list(values)
