"""What a report is made of: sections holding text, tables and figures, and number formatting."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from matplotlib.figure import Figure


@dataclass
class Table:
    """A table shown in the report and written to ``tables/<key>.csv``."""

    key: str
    title: str
    frame: pd.DataFrame
    note: str = ""
    csv: pd.DataFrame | None = None  # a machine-readable version (raw numbers), if different


@dataclass
class FigureSpec:
    """A figure drawn when the report is written (so its cost is timed apart)."""

    key: str
    caption: str
    draw: Callable[[], Figure]
    path: str = ""  # relative path once written


@dataclass
class Section:
    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    not_computed: list[str] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)

    def skip(self, reason: str, subjects: list[str] | None = None) -> None:
        """Say plainly what could not be computed and why (and whom it concerns)."""
        self.not_computed.append(reason)
        if subjects:
            self.subjects.extend(s for s in subjects if s not in self.subjects)


@dataclass
class ProtocolReport:
    protocol_id: str
    title: str
    description: str
    facts: list[tuple[str, str]]
    sections: list[Section]
    results: dict[str, Any] = field(default_factory=dict)  # raw results for tests and JSON


def pct(x: float, digits: int = 1) -> str:
    """Return a proportion as a percentage, '–' when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.{digits}f}%"


def ci(lower: float, upper: float, digits: int = 1, scale: float = 100.0, unit: str = "%") -> str:
    """Return an interval as 'a–b' (percent by default), '–' when missing."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lower, upper)):
        return "–"
    return f"{scale * lower:.{digits}f} to {scale * upper:.{digits}f}{unit}"


def num(x: float, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}f}"


def pval(p: float | None) -> str:
    """Return a p-value as R prints it in reports: '<0.001' or three decimals."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"
