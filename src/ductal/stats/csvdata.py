"""Read a CSV file for the statistics commands, failing with a clear message."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ductal.errors import Problem, ValidationError
from ductal.stats import _validate


def read_csv(path: str | Path) -> pd.DataFrame:
    """Return the CSV file at ``path`` as a DataFrame (header row required, empty cells NaN).

    Error messages count data rows from 1: row 1 is the line after the header.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(
            "cannot read the data file", problems=[Problem(f"file {p}", "no such file")]
        )
    try:
        frame = pd.read_csv(p, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValidationError(
            "cannot read the data file", problems=[Problem(f"file {p}", first)]
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """Return ``frame[name]``, or raise naming the missing column and the columns there are."""
    return _validate.column(frame, name, what="the data file")
