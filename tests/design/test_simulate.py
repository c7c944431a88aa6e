"""The adaptive-design simulator.

* No adaptation -> exact binomial power: a single-arm design whose only rule is the final
  efficacy criterion succeeds exactly when X >= c, so its simulated power must match
  binom.sf(c - 1, n, p) within Monte Carlo error (4 standard errors).
* The non-inferiority design's success probability is computed exactly by enumerating both
  arms' binomial outcomes, and the simulation must agree within 4 standard errors.
* Reproducibility: the same seed gives the same result, in-process or on Dask with 1 or 2 workers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from ductal.design.posterior import prob_difference_above
from ductal.design.rules import allocation, assess_arms, compile_design
from ductal.design.runner import simulate
from ductal.design.spec import AdaptiveDesign, load_design, parse_design
from ductal.errors import ValidationError


def _single_arm(looks: list[int], **rules: Any) -> AdaptiveDesign:
    return parse_design(
        {
            "name": "single",
            "arms": [{"id": "T"}],
            "looks": looks,
            "rules": {"efficacy": {"threshold": 0.7, "bound": 0.95}, **rules},
            "scenarios": [
                {"name": "null", "rates": {"T": 0.7}, "null_hypothesis": True},
                {"name": "alt", "rates": {"T": 0.9}},
            ],
        }
    )


def _cutoff(n: int, threshold: float, bound: float) -> int:
    """Smallest responder count whose Beta(1 + x, 1 + n - x) posterior meets the bound."""
    return next(x for x in range(n + 1) if stats.beta.sf(threshold, 1 + x, 1 + n - x) >= bound)


@pytest.mark.parametrize("looks", [[25], [10, 18, 25]], ids=["one-look", "three-looks-no-rules"])
def test_without_adaptation_power_is_exact_binomial(looks: list[int]) -> None:
    trials = 40_000
    result = simulate(_single_arm(looks), trials=trials, seed=11)
    c = _cutoff(25, 0.7, 0.95)
    for sc, p in zip(result["scenarios"], (0.7, 0.9), strict=True):
        exact = stats.binom.sf(c - 1, 25, p)
        se = math.sqrt(exact * (1 - exact) / trials)
        assert abs(sc["p_success"] - exact) < 4 * se
        assert sc["arms"][0]["expected_n"] == 25
    assert result["scenarios"][0]["type_i_error"] is not None
    assert result["scenarios"][1]["power"] is not None


def test_noninferiority_matches_exact_enumeration() -> None:
    design = load_design("builtin:lavage-vs-steroid-ni")
    trials = 20_000
    result = simulate(design, trials=trials, seed=5, scenarios=["planned", "margin"])
    n = 63
    x1, x2 = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    p_ni = prob_difference_above(1 + x1, 1 + n - x1, 1 + x2, 1 + n - x2, -0.15).reshape(x1.shape)
    success = p_ni >= 0.975
    for sc in result["scenarios"]:
        p_lav, p_ster = sc["rates"]["lavage"], sc["rates"]["steroid"]
        joint = np.outer(
            stats.binom.pmf(np.arange(n + 1), n, p_lav),
            stats.binom.pmf(np.arange(n + 1), n, p_ster),
        )
        exact = float(joint[success].sum())
        se = math.sqrt(exact * (1 - exact) / trials)
        assert abs(sc["p_success"] - exact) < 4 * se
        assert [a["expected_n"] for a in sc["arms"]] == [63, 63]


def test_same_seed_same_result_and_other_seed_differs() -> None:
    design = load_design("builtin:refractory-igm-adaptive")
    one = simulate(design, trials=600, seed=3, chunk_trials=250)
    two = simulate(design, trials=600, seed=3, chunk_trials=250)
    other = simulate(design, trials=600, seed=4, chunk_trials=250)
    assert one == two
    assert one != other


def test_dask_gives_the_serial_result() -> None:
    distributed = pytest.importorskip("dask.distributed")
    LocalCluster = distributed.LocalCluster

    design = load_design("builtin:lavage-pilot")
    serial = simulate(design, trials=3000, seed=9, chunk_trials=500)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        on_cluster = simulate(
            design, trials=3000, seed=9, chunk_trials=500, scheduler=cluster.scheduler_address
        )
    assert on_cluster == serial


def test_local_workers_give_the_serial_result() -> None:
    pytest.importorskip("dask.distributed")
    design = load_design("builtin:lavage-pilot")
    serial = simulate(design, trials=1000, seed=2, chunk_trials=500, scenarios=["target"])
    done: list[int] = []
    parallel = simulate(
        design,
        trials=1000,
        seed=2,
        chunk_trials=500,
        scenarios=["target"],
        workers=2,
        progress=done.append,
    )
    assert parallel == serial
    assert sum(done) == 1000


def test_monte_carlo_posteriors_agree_with_integration() -> None:
    design = load_design("builtin:lavage-pilot")
    exact = simulate(design, trials=4000, seed=1, scenarios=["null"])
    mc = simulate(design, trials=4000, seed=1, scenarios=["null"], draws=4000)
    assert mc["posterior"].startswith("Monte Carlo")
    # same simulated data; only posterior noise near the decision bounds can differ
    assert abs(mc["scenarios"][0]["p_success"] - exact["scenarios"][0]["p_success"]) < 0.01


def test_adaptive_design_characteristics_are_consistent() -> None:
    design = load_design("builtin:refractory-igm-adaptive")
    result = simulate(design, trials=1000, seed=8, scenarios=["published-like"])
    sc = result["scenarios"][0]
    arms = {a["arm"]: a for a in sc["arms"]}
    # supportive care (20% CR) is dropped for inadequate response almost always, methotrexate
    # (94%) almost never; the three arms' expected sizes add up to the expected total
    assert arms["A"]["p_dropped"] > 0.99
    assert arms["A"]["p_dropped_inadequate"] > 0.5
    assert arms["C"]["p_dropped"] < 0.05
    assert sum(a["expected_n"] for a in sc["arms"]) == pytest.approx(sc["expected_n_total"])
    assert sum(sc["p_stop_by_look"].values()) == pytest.approx(1.0)
    assert sum(sc["p_stop_reason"].values()) == pytest.approx(1.0)
    for arm in sc["arms"]:
        assert sum(arm["p_selected_by_look"]) == pytest.approx(arm["p_selected"])
        assert sum(arm["p_dropped_by_look"]) == pytest.approx(arm["p_dropped"])
    assert abs(arms["C"]["bias"]) < 0.01


def test_response_adaptive_allocation_respects_bounds() -> None:
    plan = compile_design(load_design("builtin:refractory-igm-adaptive"))
    p_best = np.array([[0.001, 0.009, 0.99], [0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
    active = np.array([[True, True, True], [True, True, True], [False, True, True]])
    probs = allocation(plan, active, p_best)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0])
    assert np.all(probs[active] >= 0.1 - 1e-12) and np.all(probs[active] <= 0.8 + 1e-12)
    assert probs[2, 0] == 0.0
    assert probs[0] == pytest.approx([0.1, 0.1, 0.8])


def test_assess_arms_for_an_interim() -> None:
    design = load_design("builtin:refractory-igm-adaptive")
    out = {a.arm: a for a in assess_arms(design, {"A": (2, 10), "B": (12, 20), "C": (18, 20)})}
    # threshold 0.6, bound 0.05: P(rate_A > 0.6 | 2/10) is far below 0.05
    assert out["A"].p_above_threshold == pytest.approx(stats.beta.sf(0.6, 3, 9), rel=1e-12)
    assert out["A"].recommendation == "drop"
    assert "inadequate response" in out["A"].reason
    assert out["C"].recommendation == "keep"
    assert out["C"].p_best is not None and out["C"].p_best > out["B"].p_best  # type: ignore[operator]
    assert sum(a.p_best or 0.0 for a in out.values()) == pytest.approx(1.0)
    last = assess_arms(
        design, {"A": (2, 10), "B": (12, 20), "C": (18, 20)}, active={"C"}, final=True
    )
    assert [a.recommendation for a in last] == ["drop", "drop", "select"]


def test_assess_arms_rejects_bad_counts() -> None:
    design = load_design("builtin:refractory-igm-adaptive")
    with pytest.raises(ValidationError) as err:
        assess_arms(design, {"A": (12, 10), "B": (1, 2), "Z": (0, 1)})
    assert sorted(p.field for p in err.value.problems) == ["counts.A", "counts.C", "counts.Z"]


def test_bad_settings() -> None:
    design = load_design("builtin:lavage-pilot")
    with pytest.raises(ValidationError) as err:
        simulate(design, trials=0, draws=1)
    assert sorted(p.field for p in err.value.problems) == ["draws", "trials"]
    with pytest.raises(ValidationError):
        simulate(design, trials=10, scenarios=["nope"])
