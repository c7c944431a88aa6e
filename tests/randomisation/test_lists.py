"""Pure allocation lists: balance within every block, block sizes, reproducibility, extension."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ductal.errors import ValidationError
from ductal.randomisation import lists


def _blocks(slots: list[lists.Slot]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for slot in slots:
        out.setdefault(slot.block, []).append(slot.arm)
    return out


@pytest.mark.parametrize(
    ("arms", "ratios", "sizes"),
    [
        pytest.param(["lavage", "steroid"], [1, 1], [4, 6], id="1:1 blocks of 4 or 6"),
        pytest.param(["a", "b", "c"], [1, 1, 1], [3, 6], id="three arms"),
        pytest.param(["new", "control"], [2, 1], [3, 6, 9], id="2:1"),
    ],
)
def test_every_block_is_balanced_and_of_an_allowed_size(
    arms: list[str], ratios: list[int], sizes: list[int]
) -> None:
    slots = lists.allocation_list(
        lists.derive_seed(20181101, "severity=mild"), arms, ratios, sizes, min_slots=500
    )
    assert len(slots) >= 500
    assert [s.position for s in slots] == list(range(1, len(slots) + 1))
    unit = sum(ratios)
    for number, content in _blocks(slots).items():
        assert len(content) in sizes, number
        counts = Counter(content)
        for arm, ratio in zip(arms, ratios, strict=True):
            assert counts[arm] == ratio * len(content) // unit


def test_block_sizes_and_first_arm_are_uniformly_random() -> None:
    slots = lists.allocation_list(
        lists.derive_seed(7, "all"), ["a", "b"], [1, 1], [4, 6], min_slots=20_000
    )
    blocks = _blocks(slots)
    n = len(blocks)
    fours = sum(len(c) == 4 for c in blocks.values())
    first_a = sum(c[0] == "a" for c in blocks.values())
    # each is Binomial(n, 1/2): allow four standard deviations
    tolerance = 4 * np.sqrt(n * 0.25)
    assert abs(fours - n / 2) < tolerance
    assert abs(first_a - n / 2) < tolerance


def test_the_same_seed_and_stratum_give_the_same_list() -> None:
    def make(seed: int, key: str) -> list[lists.Slot]:
        return lists.allocation_list(
            lists.derive_seed(seed, key), ["a", "b"], [1, 1], [4, 6], min_slots=60
        )

    assert make(11, "severity=mild") == make(11, "severity=mild")
    arms = [s.arm for s in make(11, "severity=mild")]
    assert arms != [s.arm for s in make(11, "severity=severe")]
    assert arms != [s.arm for s in make(12, "severity=mild")]


def test_an_extension_continues_with_the_blocks_that_would_have_followed() -> None:
    seed = lists.derive_seed(99, "all")
    whole = lists.allocation_list(seed, ["a", "b", "c"], [1, 1, 1], [3, 6], min_slots=120)
    first = lists.allocation_list(seed, ["a", "b", "c"], [1, 1, 1], [3, 6], min_slots=30)
    more = lists.allocation_list(
        seed,
        ["a", "b", "c"],
        [1, 1, 1],
        [3, 6],
        min_slots=first[-1].position + 60,
        first_block=first[-1].block + 1,
    )
    assert more[0].position == first[-1].position + 1
    assert first + more == whole[: len(first) + len(more)]


def test_block_sizes_that_do_not_fit_are_refused_or_adjusted() -> None:
    assert lists.usable_block_sizes([4, 6], [1, 1], adjust=False) == [4, 6]
    assert lists.usable_block_sizes([3, 4, 6], [1, 1, 1], adjust=False) == [3, 6]
    with pytest.raises(ValidationError) as info:
        lists.usable_block_sizes([3], [1, 1], adjust=False)
    assert info.value.problems[0].field == "randomisation.block_sizes"
    assert lists.usable_block_sizes([3, 6], [1, 1], adjust=False) == [6]
    # two arms left of three: sizes 3 and 6 become 4 (round(1.5) = 2 pairs) and 6
    assert lists.usable_block_sizes([3, 6], [1, 1], adjust=True) == [4, 6]
    assert lists.usable_block_sizes([3], [1, 1], adjust=True) == [4]
    assert lists.usable_block_sizes([2, 3], [1, 1, 1], adjust=True) == [3]
    assert lists.usable_block_sizes([3, 6], [1], adjust=False) == [3, 6]
    with pytest.raises(ValidationError):
        lists.usable_block_sizes([4], [0, 1], adjust=True)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValidationError):
        lists.derive_seed(-1, "all")
    with pytest.raises(ValidationError):
        next(lists.permuted_blocks(lists.derive_seed(1, "x"), ["a", "b"], [1], [2]))
    with pytest.raises(ValidationError):
        next(lists.permuted_blocks(lists.derive_seed(1, "x"), ["a", "b"], [1, 1], [3]))


def test_fresh_master_seeds_differ_and_fit_the_seed_column() -> None:
    seeds = {lists.fresh_master_seed() for _ in range(5)}
    assert len(seeds) == 5
    assert all(0 <= s < 2**128 and len(str(s)) <= 64 for s in seeds)


@settings(max_examples=60, deadline=None)
@given(
    ratios=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    multiples=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    seed=st.integers(0, 2**64),
    key=st.text(min_size=1, max_size=20),
)
def test_any_ratios_and_sizes_give_balanced_blocks(
    ratios: list[int], multiples: list[int], seed: int, key: str
) -> None:
    arms = [f"arm{i}" for i in range(len(ratios))]
    sizes = [m * sum(ratios) for m in multiples]
    slots = lists.allocation_list(lists.derive_seed(seed, key), arms, ratios, sizes, min_slots=40)
    assert len(slots) >= 40
    for content in _blocks(slots).values():
        assert len(content) in sizes
        counts = Counter(content)
        reps = len(content) // sum(ratios)
        assert all(counts[a] == r * reps for a, r in zip(arms, ratios, strict=True))
