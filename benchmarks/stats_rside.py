"""Run an R timing script beside a Python timing, for the stats benchmarks."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

R_DIR = Path(__file__).parent / "r"


def best_of(repeats: int, work: Callable[[], T]) -> tuple[float, T]:
    """Return the fastest wall time of ``repeats`` runs of ``work`` and its last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_r(script: str, csv: Path, repeats: int) -> list[str] | None:
    """Run ``benchmarks/r/<script>`` on ``csv``; return its printed fields, None without R."""
    rscript = shutil.which("Rscript")
    if rscript is None:
        return None
    out = subprocess.run(
        [rscript, str(R_DIR / script), str(csv), str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.split()
