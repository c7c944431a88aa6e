"""Small awkward datasets: every estimator gives an answer or a ValidationError, never a crash.

Warnings are errors in this suite, so a stray division by zero fails here too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from ductal.errors import ValidationError
from ductal.stats.competing_risks import FineGray, cumulative_incidence
from ductal.stats.cox import CoxPH
from ductal.stats.logistic import LogisticRegression
from ductal.stats.survival import KaplanMeier

rows = st.integers(min_value=1, max_value=12)


@st.composite
def datasets(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(rows)
    times = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 2.5, 7.0]), min_size=n, max_size=n))
    status = draw(st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n))
    group = draw(st.lists(st.sampled_from(["a", "b"]), min_size=n, max_size=n))
    x = draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 3.0]), min_size=n, max_size=n))
    df = pd.DataFrame({"t": times, "s": status, "g": group, "x": x})
    df["e"] = (df["s"] == 1).astype(int)
    return df


@settings(max_examples=150, deadline=None)
@given(datasets())
def test_estimators_answer_or_refuse_clearly(df: pd.DataFrame) -> None:
    km = KaplanMeier().fit(df["t"], df["e"], df["g"])
    for c in km.curves_.values():
        assert np.all((c.survival >= 0) & (c.survival <= 1))
        c.median  # noqa: B018 - must not raise
        c.rmst(8.0)
    km.to_dict()
    ci = cumulative_incidence(df["t"], df["s"], df["g"])
    for curve in ci.curves:
        assert np.all(np.diff(curve.estimate) >= -1e-12)
        assert np.all(curve.variance >= -1e-12)
    ci.to_dict()
    for fit in (
        lambda: CoxPH().fit(df, time="t", event="e", covariates=["x"]),
        lambda: FineGray(cause=1).fit(df, time="t", status="s", covariates=["x"]),
        lambda: LogisticRegression().fit(df, outcome="e", covariates=["x"]),
    ):
        try:
            model = fit()
        except ValidationError as exc:
            assert exc.problems
        else:
            model.to_dict()
