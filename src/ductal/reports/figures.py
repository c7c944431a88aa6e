"""Publication figures as matplotlib ``Figure`` objects (no pyplot state).

Each function takes the numbers to draw (already computed by :mod:`ductal.stats`), the labels
in the report's language and an optional ``ax``; without one it makes its own figure. They are
called inside :func:`ductal.reports.style.context`.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch, Patch

from ductal.outcomes.dataset import records_of
from ductal.reports.style import (
    BENCHMARK_COLOUR,
    RESPONSE_COLOURS,
    arm_colour,
    new_figure,
)


def _axes(ax: Axes | None, height: float) -> tuple[Figure, Axes]:
    if ax is not None:
        fig = ax.get_figure()
        assert isinstance(fig, Figure)
        return fig, ax
    fig = new_figure(height)
    return fig, fig.add_subplot()


@dataclass(frozen=True)
class StepCurve:
    """A step function with its pointwise band, e.g. 1 − S(t) of one arm."""

    label: str
    time: np.ndarray
    estimate: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    linestyle: str = "-"
    colour_index: int = -1  # default: the curve's position


def cumulative_curves(
    curves: Sequence[StepCurve],
    *,
    xlabel: str,
    ylabel: str,
    at_risk: pd.DataFrame | None = None,
    at_risk_label: str = "At risk",
    reference_band: tuple[float, float, str] | None = None,
    reference_level: tuple[float, str] | None = None,
    x_max: float | None = None,
    y_max: float = 1.02,
    ax: Axes | None = None,
) -> Figure:
    """Draw rising step curves (cumulative incidence, 1 − KM) with bands and a risk table.

    ``at_risk`` has one row per curve label and one column per time tick.
    """
    height = 3.6 + (0.18 * len(at_risk) if at_risk is not None else 0)
    if ax is None:
        fig = new_figure(height)
        if at_risk is not None:
            grid = fig.add_gridspec(2, 1, height_ratios=[5, 0.55 + 0.28 * len(at_risk)])
            ax = fig.add_subplot(grid[0])
            table_ax: Axes | None = fig.add_subplot(grid[1], sharex=ax)
        else:
            ax = fig.add_subplot()
            table_ax = None
    else:
        fig, ax = _axes(ax, height)
        table_ax = None
    if reference_band is not None:
        lo, hi, label = reference_band
        ax.axvspan(lo, hi, color=BENCHMARK_COLOUR, alpha=0.12, lw=0, label=label)
    for i, c in enumerate(curves):
        colour = arm_colour(i if c.colour_index < 0 else c.colour_index)
        t = np.concatenate(([0.0], c.time))
        y = np.concatenate(([0.0], c.estimate))
        ax.step(t, y, where="post", color=colour, lw=1.6, ls=c.linestyle, label=c.label)
        if c.lower is not None and c.upper is not None:
            lo_ = np.concatenate(([0.0], c.lower))
            hi_ = np.concatenate(([0.0], c.upper))
            ax.fill_between(t, lo_, hi_, step="post", color=colour, alpha=0.15, lw=0)
    if reference_level is not None:
        level, label = reference_level
        ax.axhline(level, color="#B22222", lw=0.9, ls="--", label=label)
    ax.set_ylim(0, y_max)
    ax.set_xlim(left=0, right=x_max)
    ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#DDDDDD", lw=0.5)
    if len(curves) + (reference_band is not None) > 3:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(loc="lower right")
    if table_ax is not None and at_risk is not None:
        ax.tick_params(labelbottom=False)
        table_ax.set_ylim(-0.5, len(at_risk) - 0.5)
        table_ax.invert_yaxis()
        for row, (label, values) in enumerate(zip(at_risk.index, at_risk.to_numpy(), strict=True)):
            for tick, value in zip(at_risk.columns, values, strict=True):
                table_ax.text(float(tick), row, f"{int(value)}", ha="center", va="center", size=7.5)
            table_ax.text(
                -0.035,
                row,
                str(label),
                ha="right",
                va="center",
                size=7.5,
                transform=table_ax.get_yaxis_transform(),
                color=arm_colour(row),
            )
        table_ax.set_yticks([])
        for side in ("left", "right", "top"):
            table_ax.spines[side].set_visible(False)
        table_ax.set_xlabel(xlabel)
        table_ax.set_title(at_risk_label, loc="left", size=8, pad=2)
        table_ax.set_xticks([float(c) for c in at_risk.columns])
    else:
        ax.set_xlabel(xlabel)
    return fig


@dataclass(frozen=True)
class ForestRow:
    label: str
    estimate: float
    lower: float
    upper: float
    text: str = ""
    colour: str = "#222222"
    marker: str = "s"
    band: tuple[float, float] | None = None  # a literature range drawn as a bar
    header: bool = False


def forest(
    rows: Sequence[ForestRow],
    *,
    xlabel: str,
    reference: float | None = None,
    reference_label: str = "",
    x_limits: tuple[float, float] = (0.0, 1.0),
    percent: bool = True,
    points: bool = False,
    ax: Axes | None = None,
) -> Figure:
    """Draw a forest plot: one row per estimate with its interval, labels on the left."""
    height = 0.9 + 0.27 * len(rows)
    fig, ax = _axes(ax, height)
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows, strict=True):
        if r.header:
            continue
        if r.band is not None:
            ax.plot(
                list(r.band),
                [yi, yi],
                color=BENCHMARK_COLOUR,
                lw=6,
                alpha=0.45,
                solid_capstyle="butt",
            )
        if not math.isnan(r.estimate):
            if not (math.isnan(r.lower) or math.isnan(r.upper)):
                ax.plot([r.lower, r.upper], [yi, yi], color=r.colour, lw=1.3)
            ax.plot([r.estimate], [yi], marker=r.marker, color=r.colour, ms=5.5, ls="none")
    if reference is not None:
        ax.axvline(reference, color="#B22222", lw=0.9, ls="--")
        if reference_label:
            ax.text(
                reference,
                len(rows) - 0.4,
                reference_label,
                color="#B22222",
                size=7.5,
                ha="center",
                va="bottom",
            )
    ax.set_yticks(y)
    ax.set_yticklabels([textwrap.fill(r.label, 44) for r in rows])
    for tick, r in zip(ax.get_yticklabels(), rows, strict=True):
        if r.header:
            tick.set_fontweight("bold")
    ax.set_ylim(-0.7, len(rows) - 0.3 + (0.5 if reference_label else 0))
    ax.set_xlim(*x_limits)
    if percent:
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    elif points:
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:+.0f}" if v else "0")
    ax.set_xlabel(textwrap.fill(xlabel, 70))
    ax.grid(axis="x", color="#E5E5E5", lw=0.5)
    ax.spines["left"].set_visible(False)
    ax.tick_params(axis="y", length=0)
    if percent and x_limits == (0.0, 1.0):
        lows = [
            v for r in rows for v in (r.lower, r.estimate, *(r.band or ())) if not math.isnan(v)
        ]
        if lows:
            left = max(0.0, math.floor(10 * min(lows) - 0.5) / 10)
            ax.set_xlim(left - 0.02 if left == 0 else left, 1.02)  # room for markers at 0%
    texts = [r.text for r in rows]
    if any(texts):
        right = ax.secondary_yaxis("right")
        right.set_yticks(y)
        right.set_yticklabels(texts, size=7.5)
        right.tick_params(length=0)
        right.spines["right"].set_visible(False)
    return fig


def flow_diagram(
    boxes: Sequence[tuple[str, str, list[str]]],
    arms: Sequence[tuple[str, list[str]]],
    ax: Axes | None = None,
) -> Figure:
    """Draw a CONSORT-style flow: stacked boxes, then one column of boxes per arm.

    ``boxes`` are (title, count, side notes) from screening to enrolment; ``arms`` are the
    allocated arms with their lines (allocated, lost, analysed, …). Layout is in text lines.
    """
    bh = 2.4  # main box height, in text lines
    gaps = [0.0] + [max(1.8, 0.95 * len(notes) + 1.2) for _, _, notes in boxes[1:]]
    arm_h = 0.95 * max((len(lines) for _, lines in arms), default=1) + 1.6
    total = len(boxes) * bh + sum(gaps) + 1.8 + arm_h + 0.6
    fig, ax = _axes(ax, 0.17 * total + 0.3)
    ax.set_axis_off()
    ax.set_xlim(0, 100)
    ax.set_ylim(0, total)
    edge = "#4A5A70"

    def box(
        x0: float,
        y0: float,
        w: float,
        h: float,
        text: str,
        *,
        face: str,
        size: float,
        align: str = "center",
    ) -> None:
        ax.add_patch(
            FancyBboxPatch(
                (x0, y0),
                w,
                h,
                boxstyle="round,pad=0,rounding_size=0.6",
                fc=face,
                ec=edge,
                lw=0.8,
                mutation_aspect=total / 100,
            )
        )
        x = x0 + w / 2 if align == "center" else x0 + 1.5
        ax.text(x, y0 + h / 2, text, ha=align, va="center", size=size, linespacing=1.35)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate(
            "",
            (x1, y1),
            (x0, y0),
            arrowprops={"arrowstyle": "-|>", "color": edge, "lw": 0.8, "shrinkA": 0, "shrinkB": 0},
        )

    main_x, main_w = 8.0, 34.0
    centre = main_x + main_w / 2
    y = total - 0.3
    prev_bottom: float | None = None
    for (title, count, notes), gap in zip(boxes, gaps, strict=True):
        if prev_bottom is not None and notes:
            h = gap - 0.8
            mid = prev_bottom - gap / 2
            box(50, mid - h / 2, 48, h, "\n".join(notes), face="#FFFFFF", size=7, align="left")
            ax.plot([centre, 50], [mid, mid], color=edge, lw=0.6)
        y -= gap
        y0 = y - bh
        box(main_x, y0, main_w, bh, f"{title}\n{count}", face="#EEF3FA", size=8)
        if prev_bottom is not None:
            arrow(centre, prev_bottom, centre, y0 + bh)
        prev_bottom = y0
        y = y0
    n_arms = max(1, len(arms))
    width = 96 / n_arms
    y0 = 0.4
    for i, (title, lines) in enumerate(arms):
        x0 = 2 + width * i + 1
        w = width - 2
        box(x0, y0, w, arm_h, f"{title}\n\n" + "\n".join(lines), face="#FFFFFF", size=7.5)
        if prev_bottom is not None:
            arrow(main_x + main_w / 2, prev_bottom, x0 + w / 2, y0 + arm_h)
    return fig


def swimmer(
    lanes: pd.DataFrame,
    marks: pd.DataFrame,
    *,
    xlabel: str,
    legend: dict[str, str],
    ax: Axes | None = None,
) -> Figure:
    """Draw one horizontal bar per subject with response markers over time.

    ``lanes``: study_id, arm_index, end (months), relapse (months or NaN), rescue (months or NaN),
    sessions_end (months). ``marks``: study_id, month, response (CR/PR/SD/PD).
    """
    height = 1.2 + 0.15 * len(lanes)
    fig, ax = _axes(ax, height)
    ypos = {sid: i for i, sid in enumerate(lanes["study_id"])}
    for row in records_of(lanes):
        yi = ypos[row["study_id"]]
        ax.barh(
            yi, row["end"], height=0.62, color=arm_colour(int(row["arm_index"])), alpha=0.28, lw=0
        )
        if row["sessions_end"] > 0:
            ax.barh(
                yi,
                row["sessions_end"],
                height=0.62,
                color=arm_colour(int(row["arm_index"])),
                alpha=0.9,
                lw=0,
            )
        if not math.isnan(row["relapse"]):
            ax.plot(row["relapse"], yi, marker="X", color="#000000", ms=5, ls="none")
        if not math.isnan(row["rescue"]):
            ax.plot(row["rescue"], yi, marker=">", color="#6A3D9A", ms=4.5, ls="none")
    for response, colour in RESPONSE_COLOURS.items():
        sub = marks[marks["response"] == response]
        ax.scatter(
            sub["month"], [ypos[s] for s in sub["study_id"]], s=11, color=colour, zorder=3, lw=0
        )
    ax.set_yticks(range(len(lanes)))
    ax.set_yticklabels(lanes["study_id"], size=6)
    ax.set_ylim(-0.7, len(lanes) - 0.3)
    ax.set_xlim(left=0)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", color="#E5E5E5", lw=0.5)
    handles: list[Artist] = [
        Line2D([], [], marker="o", ls="none", color=c, ms=4, label=r)
        for r, c in RESPONSE_COLOURS.items()
    ]
    handles += [
        Patch(color="#555555", alpha=0.9, label=legend["sessions"]),
        Line2D([], [], marker="X", ls="none", color="#000000", ms=5, label=legend["relapse"]),
        Line2D([], [], marker=">", ls="none", color="#6A3D9A", ms=5, label=legend["rescue"]),
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.06 - 3 / (len(lanes) + 20)),
        ncol=7,
        frameon=False,
    )
    return fig


def waterfall(
    changes: pd.DataFrame,
    *,
    ylabel: str,
    xlabel: str,
    thresholds: tuple[float, float],
    ax: Axes | None = None,
) -> Figure:
    """Draw the best change in lesion size per subject, sorted, coloured by best response.

    ``changes``: best_change (fraction), best_response.
    """
    fig, ax = _axes(ax, 3.0)
    data = changes.sort_values("best_change", ascending=False).reset_index(drop=True)
    colours = [RESPONSE_COLOURS.get(str(r), "#BBBBBB") for r in data["best_response"]]
    values = 100 * data["best_change"].to_numpy(dtype=float)
    x = np.arange(len(values))
    if len(values) <= 400:
        ax.bar(x, values, width=0.85, color=colours, lw=0)
    else:  # thousands of bars: one line collection draws far faster than as many patches
        ax.vlines(x, 0, values, colors=colours, lw=max(0.3, 400 / len(values)))
    ax.axhline(0, color="#333333", lw=0.7)
    ax.axhline(-100 * thresholds[0], color="#56B4E9", lw=0.8, ls="--")
    ax.axhline(100 * thresholds[1], color="#D55E00", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_xticks([])
    ax.set_xlim(-1, len(values))
    top = max(30.0, float(np.nanmax(values)) + 10) if len(values) else 30.0
    ax.set_ylim(-105, top)
    ax.legend(
        handles=[Patch(color=c, label=r) for r, c in RESPONSE_COLOURS.items()],
        loc="upper right",
        ncol=4,
    )
    return fig


def interim_looks(
    looks: pd.DataFrame,
    *,
    threshold: float,
    cutoff: float,
    labels: dict[str, str],
    arm_names: Sequence[str],
    ax: Axes | None = None,
) -> Figure:
    """Draw each arm's response rate and posterior probability over the interim looks.

    ``looks``: look, arm, rate, prob_above, terminated (bool).
    """
    fig = new_figure(3.2)
    left, right = fig.subplots(1, 2)
    for i, arm in enumerate(arm_names):
        sub = looks[looks["arm"] == arm]
        if sub.empty:
            continue
        colour = arm_colour(i)
        left.plot(sub["look"], sub["rate"], marker="o", ms=3.5, color=colour, label=arm)
        right.plot(sub["look"], sub["prob_above"], marker="o", ms=3.5, color=colour, label=arm)
        stop = sub[sub["terminated"]]
        if not stop.empty:
            first = stop.iloc[0]
            right.plot(
                first["look"],
                first["prob_above"],
                marker="x",
                ms=8,
                color="#B22222",
                mew=1.8,
                ls="none",
            )
    left.axhline(threshold, color=BENCHMARK_COLOUR, lw=0.8, ls="--")
    right.axhline(cutoff, color="#B22222", lw=0.8, ls="--")
    for axis, ylabel in ((left, labels["rate"]), (right, labels["prob"])):
        axis.set_xlabel(labels["look"])
        axis.set_ylabel(ylabel)
        axis.set_ylim(-0.02, 1.02)
        axis.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.grid(axis="y", color="#E5E5E5", lw=0.5)
    fig.legend(
        handles=left.get_lines()[: len(arm_names)], loc="outside lower center", ncol=len(arm_names)
    )
    return fig


def stacked_bars(
    table: pd.DataFrame, *, ylabel: str, colours: Sequence[str], ax: Axes | None = None
) -> Figure:
    """Draw a stacked bar chart of a table (rows = bars, columns = stacked parts)."""
    fig, ax = _axes(ax, 2.6)
    bottom = np.zeros(len(table))
    x = np.arange(len(table))
    for j, col in enumerate(table.columns):
        values = table[col].to_numpy(dtype=float)
        ax.bar(x, values, bottom=bottom, color=colours[j % len(colours)], label=str(col), width=0.6)
        bottom += values
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in table.index])
    ax.set_ylabel(ylabel)
    ax.legend(loc="upper right", ncol=min(5, len(table.columns)))
    ax.grid(axis="y", color="#E5E5E5", lw=0.5)
    return fig
