"""Figure style: fonts (with a CJK font for Chinese), sizes and colours, without pyplot state.

Figures are :class:`matplotlib.figure.Figure` objects drawn on the Agg canvas. The font family
list is applied with :func:`matplotlib.rc_context` around building *and* saving a figure, so the
process-wide settings are left as they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

matplotlib.use("Agg")

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei")
LATIN_FONTS = ("DejaVu Sans",)
WIDTH_IN = 6.6  # fits an A4 page with 2 cm margins
DPI = 150  # 990 px across the A4 text width; sharp in print and quick to encode

# Okabe–Ito, safe for colour-blind readers
ARM_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
RESPONSE_COLOURS = {"CR": "#009E73", "PR": "#56B4E9", "SD": "#9A9A9A", "PD": "#D55E00"}
BENCHMARK_COLOUR = "#7F7F7F"


def _first_cjk_font() -> str | None:
    for name in CJK_FONTS:
        try:
            font_manager.findfont(name, fallback_to_default=False)
        except ValueError:
            continue
        return name
    return None


@cache
def available_cjk_font() -> str | None:
    """Return the first installed CJK font of :data:`CJK_FONTS`, or None.

    Matplotlib keeps a list of the system's fonts from its first run; a CJK font installed
    since is not on it, so the system's font files are looked through once before giving up.
    """
    name = _first_cjk_font()
    if name is None:
        for path in font_manager.findSystemFonts():
            if any(tag in Path(path).name.lower() for tag in _CJK_FILE_TAGS):
                font_manager.fontManager.addfont(path)
        name = _first_cjk_font()
    return name


_CJK_FILE_TAGS = ("cjk", "sourcehansans", "wqy", "wenquanyi")


def font_families(lang: str) -> list[str]:
    """Return the font family list for ``lang`` (a CJK font first for Chinese, if installed)."""
    cjk = available_cjk_font()
    if lang.startswith("zh") and cjk:
        return [cjk, *LATIN_FONTS]
    return [*LATIN_FONTS, *([cjk] if cjk else [])]


def rc(lang: str) -> dict[str, Any]:
    return {
        "font.family": font_families(lang),
        "font.size": 8.5,
        "axes.titlesize": 9.5,
        "axes.labelsize": 8.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.linewidth": 0.7,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "xtick.major.width": 0.7,
        "ytick.major.width": 0.7,
        "legend.fontsize": 7.5,
        "legend.frameon": False,
        "axes.unicode_minus": False,
        "savefig.dpi": DPI,
        "pdf.fonttype": 42,
    }


@contextmanager
def context(lang: str) -> Iterator[None]:
    """Apply the report style while building and saving figures."""
    with matplotlib.rc_context(cast(Any, rc(lang))):
        yield


def new_figure(height_in: float, width_in: float = WIDTH_IN) -> Figure:
    """Return an empty figure with an Agg canvas attached (no pyplot)."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def arm_colour(index: int) -> str:
    return ARM_COLOURS[index % len(ARM_COLOURS)]


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as an opaque RGB PNG at :data:`DPI` (PDF renderers embed it as it is)."""
    fig.set_dpi(DPI)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    Image.fromarray(rgb).save(path, compress_level=3, dpi=(DPI, DPI))
