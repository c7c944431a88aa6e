"""Write the baseline tables of the statistical-package tests to a folder (for the R fixture)."""

from __future__ import annotations

import sys
from pathlib import Path

from ductal.exchange.statpackages import write_tables

from .test_statpackages import _tables

if __name__ == "__main__":  # pragma: no cover - run by hand with the R script
    folder = Path(sys.argv[1])
    for fmt in ("stata", "spss", "sas"):
        write_tables(_tables(), folder, fmt)  # type: ignore[arg-type]
