"""Input checking shared by every estimator: one clear problem per bad column, naming the row.

Rows are counted from 1 in the order the data were given (row 1 is the first data row of a CSV
file, the line after the header).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ductal.errors import Problem, ValidationError

FloatArray = npt.NDArray[Any]  # float64 in practice
IntArray = npt.NDArray[Any]  # int64 in practice
ArrayLike = npt.ArrayLike | pd.Series


def fail(field: str, message: str, *, what: str) -> ValidationError:
    return ValidationError(f"invalid input for {what}", problems=[Problem(field, message)])


def _first_row(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


def _numeric(values: ArrayLike, field: str, what: str) -> FloatArray:
    """Return ``values`` as floats, or raise naming the first entry that is not a number."""
    if isinstance(values, pd.Series):
        raw: Any = values.to_numpy()
    else:
        raw = np.asarray(values)
    if raw.ndim != 1:
        raise fail(field, f"expected one value per subject, got shape {raw.shape}", what=what)
    if raw.dtype.kind in "fiub":
        return raw.astype(np.float64, copy=False)
    converted = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(dtype=np.float64)
    present = pd.notna(pd.Series(raw)).to_numpy() & (pd.Series(raw).astype(str).str.strip() != "")
    bad = np.isnan(converted) & present
    if bad.any():
        i = _first_row(bad)
        raise fail(field, f"row {i + 1}: {raw[i]!r} is not a number", what=what)
    return converted


def _no_missing(values: FloatArray, field: str, what: str) -> None:
    missing = np.isnan(values)
    if missing.any():
        i = _first_row(missing)
        count = int(missing.sum())
        more = f" ({count} missing values in all)" if count > 1 else ""
        raise fail(
            field,
            f"row {i + 1}: value is missing{more}; drop or impute missing rows first",
            what=what,
        )


def times(values: ArrayLike, field: str, *, what: str) -> FloatArray:
    """Return follow-up times as floats: numeric, present, finite and not negative."""
    t = _numeric(values, field, what)
    _no_missing(t, field, what)
    if np.isinf(t).any():
        i = _first_row(np.isinf(t))
        raise fail(field, f"row {i + 1}: time is infinite", what=what)
    if (t < 0).any():
        i = _first_row(t < 0)
        raise fail(field, f"row {i + 1}: negative time {t[i]:g}", what=what)
    return t


def events(values: ArrayLike, field: str, *, what: str) -> IntArray:
    """Return an event indicator as 0/1 integers, or raise at the first value that is not 0/1."""
    e = _numeric(values, field, what)
    _no_missing(e, field, what)
    bad = (e != 0) & (e != 1)
    if bad.any():
        i = _first_row(bad)
        raise fail(
            field, f"row {i + 1}: event must be 0 (censored) or 1 (event), got {e[i]:g}", what=what
        )
    return e.astype(np.int64)


def status(values: ArrayLike, field: str, *, what: str, censor_code: int = 0) -> IntArray:
    """Return competing-risks status codes as integers (``censor_code`` = censored)."""
    s = _numeric(values, field, what)
    _no_missing(s, field, what)
    bad = (s != np.round(s)) | (s < 0)
    if bad.any():
        i = _first_row(bad)
        raise fail(
            field,
            f"row {i + 1}: status must be a whole number code (censored = {censor_code}), "
            f"got {s[i]:g}",
            what=what,
        )
    return s.astype(np.int64)


def cause_present(codes: IntArray, cause: int, field: str, *, what: str) -> None:
    """Raise if ``cause`` is the censoring code 0 or never occurs in ``codes``."""
    if cause == 0:
        raise fail(field, "status code 0 means censored; choose a cause code", what=what)
    if not (codes == cause).any():
        present = ", ".join(str(c) for c in np.unique(codes))
        raise fail(
            field,
            f"status code {cause} does not occur in any row (codes present: {present})",
            what=what,
        )


def labels(
    values: ArrayLike | None, n: int, field: str, *, what: str
) -> tuple[IntArray, list[str]]:
    """Return group codes 0..k-1 and the k group names, in sorted order of the values.

    Numeric groups sort numerically (2 before 10); all rows form one group "all" when ``values``
    is None.
    """
    if values is None:
        return np.zeros(n, dtype=np.int64), ["all"]
    raw = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if raw.shape != (n,):
        raise fail(field, f"expected {n} values, got {raw.shape[0]}", what=what)
    missing = pd.isna(pd.Series(raw)).to_numpy()
    if missing.any():
        i = _first_row(missing)
        raise fail(field, f"row {i + 1}: group is missing", what=what)
    try:
        cat = pd.Categorical(raw)
    except TypeError:  # mixed types that do not sort together
        cat = pd.Categorical(raw.astype(str))
    names = [_label(c) for c in cat.categories]
    return cat.codes.astype(np.int64), names


def _label(value: Any) -> str:
    """Write 1.0 as "1" so numeric group codes read naturally."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def same_length(field_lengths: dict[str, int], *, what: str) -> None:
    """Raise if the inputs do not all have the same length."""
    lengths = set(field_lengths.values())
    if len(lengths) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in field_lengths.items())
        raise fail("input", f"columns must have the same number of rows ({detail})", what=what)


def not_empty(n: int, *, what: str) -> None:
    """Raise when there are no subjects at all."""
    if n == 0:
        raise fail("input", "no rows: at least one subject is needed", what=what)


def covariates(frame: pd.DataFrame, columns: Sequence[str], *, what: str) -> FloatArray:
    """Return the named columns as a float matrix, naming the first bad cell."""
    missing_cols = [c for c in columns if c not in frame.columns]
    if missing_cols:
        raise fail(f"column {missing_cols[0]}", "no such column", what=what)
    cols = [_numeric(frame[c], f"column {c}", what) for c in columns]
    for c, values in zip(columns, cols, strict=True):
        _no_missing(values, f"column {c}", what)
        if np.isinf(values).any():
            i = _first_row(np.isinf(values))
            raise fail(f"column {c}", f"row {i + 1}: value is infinite", what=what)
    if not cols:
        return np.empty((len(frame), 0))
    return np.column_stack(cols)


def column(frame: pd.DataFrame, name: str, *, what: str) -> pd.Series:
    """Return ``frame[name]`` or raise naming the missing column and those that exist."""
    if name not in frame.columns:
        have = ", ".join(map(str, frame.columns[:20]))
        raise fail(f"column {name}", f"no such column (columns are: {have})", what=what)
    return frame[name]


def probability(value: float, field: str, *, what: str, open_interval: bool = True) -> float:
    """Return ``value`` if it is a probability strictly between 0 and 1 (or within [0, 1])."""
    v = float(value)
    ok = 0 < v < 1 if open_interval else 0 <= v <= 1
    if not ok or np.isnan(v):
        bounds = "strictly between 0 and 1" if open_interval else "between 0 and 1"
        raise fail(field, f"must be {bounds}, got {value}", what=what)
    return v


def count(value: int, field: str, *, what: str, minimum: int = 0) -> int:
    """Return ``value`` as an int if it is a whole number at least ``minimum``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise fail(field, f"must be a whole number, got {value!r}", what=what) from None
    if not f.is_integer() or f < minimum:
        raise fail(field, f"must be a whole number ≥ {minimum}, got {value}", what=what)
    return int(f)


def choice(value: str, allowed: Sequence[str], field: str, *, what: str) -> str:
    """Return ``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise fail(field, f"must be one of {', '.join(allowed)}; got {value!r}", what=what)
    return value
