"""Speed of the rule language and of form validation, measured side by side in one run.

Run: .venv/bin/python benchmarks/protocols_logic.py
Prints: parse time uncached vs cached (the ratio is what lru_cache buys), evaluation time per
expression, and validated records per second for the busiest built-in form (baseline).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from ductal.protocols.loader import builtin_protocol
from ductal.protocols.logic import _Parser, parse
from ductal.protocols.validation import validate_form_data

EXPRESSIONS = [
    "[diagnosis] = 'igm' and [us_size_1_mm] > 20",
    "datediff([onset_date], [assessment_date], 'd') >= 0",
    "[presentation(abscess)] = '1' or not isblank([x])",
    "if([severity_score] >= 6, 'severe', 'mild') = [severity_group]",
    "[weight_kg] / (([height_cm] / 100) * ([height_cm] / 100))",
]
VALUES = {
    "diagnosis": "igm",
    "us_size_1_mm": 25.0,
    "onset_date": "2024-01-01",
    "assessment_date": "2024-03-01",
    "presentation": ["mass", "abscess"],
    "severity_score": 7,
    "severity_group": "severe",
    "weight_kg": 60.0,
    "height_cm": 160.0,
}
BASELINE = {
    "assessment_date": "2025-01-01",
    "height_cm": "160",
    "weight_kg": 64,
    "parity": 2,
    "side": "left",
    "presentation": ["mass", "pain"],
    "crp_mg_l": "12.5",
    "ana": "negative",
    "culture": "positive",
    "organism": "corynebacterium",
    "infection_evidence": "yes",
    "us_size_1_mm": 32,
    "us_size_2_mm": 20,
    "us_size_3_mm": 15,
    "birads": "4a",
    "severity_score": 5,
}


def per_call(fn: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    n = 2000
    uncached = per_call(lambda: [_Parser(t).parse() for t in EXPRESSIONS], n) / len(EXPRESSIONS)
    cached = per_call(lambda: [parse(t) for t in EXPRESSIONS], n) / len(EXPRESSIONS)
    trees = [parse(t) for t in EXPRESSIONS]
    evaluation = per_call(lambda: [e.evaluate(VALUES) for e in trees], n) / len(EXPRESSIONS)
    print(f"parse, uncached:  {uncached * 1e6:8.1f} µs per expression")
    print(
        f"parse, cached:    {cached * 1e6:8.1f} µs per expression  "
        f"({uncached / cached:.0f}x faster)"
    )
    print(f"evaluate:         {evaluation * 1e6:8.1f} µs per expression")

    form = builtin_protocol("lavage-observational").form("baseline")
    today = date(2025, 6, 1)
    seconds = per_call(lambda: validate_form_data(form, BASELINE, today=today), 500)
    print(
        f"validate baseline ({len(form.fields)} fields, {len(form.rules)} rule): "
        f"{seconds * 1e3:6.2f} ms per record, {1 / seconds:,.0f} records/s"
    )
    started = time.perf_counter()
    builtin_protocol.cache_clear()
    builtin_protocol("lavage-vs-steroid-ni")
    elapsed = time.perf_counter() - started
    print(f"load + check lavage-vs-steroid-ni from YAML: {elapsed * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
