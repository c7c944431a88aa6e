"""Pure allocation-list generation: seeds, stratified permuted blocks with random block sizes.

Nothing here touches the database. A protocol has one *master seed*; every allocation list (one
per stratum, and one per set of open arms in an adaptive trial) draws from its own stream,
derived from the master seed and the list's key with :class:`numpy.random.SeedSequence`, so the
whole list can be regenerated and checked from the seed alone, and lists of different strata are
independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ductal.errors import Problem, ValidationError


def key_words(key: str) -> tuple[int, ...]:
    """Return the SHA-256 of ``key`` as eight 32-bit words (a SeedSequence spawn key)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return tuple(int(w) for w in np.frombuffer(digest, dtype="<u4"))


def derive_seed(master: int, key: str, *extra: int) -> np.random.SeedSequence:
    """Return the seed sequence of list ``key`` (and optionally of its ``extra`` draw numbers)."""
    if master < 0:
        raise ValidationError("bad seed", problems=[Problem("seed", "must be 0 or more")])
    return np.random.SeedSequence(master, spawn_key=(*key_words(key), *extra))


def fresh_master_seed() -> int:
    """Return a new 128-bit master seed from the operating system's entropy."""
    return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Slot:
    """One position of a generated list (1-based), the block it belongs to and its arm."""

    position: int
    block: int
    arm: str


def usable_block_sizes(sizes: Sequence[int], ratios: Sequence[int], *, adjust: bool) -> list[int]:
    """Return the block sizes that hold whole multiples of the allocation ratio.

    A block of size s holds ``s / sum(ratios)`` repetitions of the ratio. With ``adjust`` (used
    when arms of an adaptive trial were closed and the protocol's sizes may no longer fit), every
    size is rounded to the nearest multiple (at least one), so the list keeps several block sizes;
    without it, sizes that do not fit are left out and none fitting is an error.
    """
    unit = sum(ratios)
    if unit < 1 or any(r < 1 for r in ratios):
        raise ValidationError("bad ratios", problems=[Problem("arms", "ratios must be 1 or more")])
    if adjust and sizes:
        return sorted({unit * max(1, round(s / unit)) for s in sizes})
    fitting = sorted({s for s in sizes if s >= unit and s % unit == 0})
    if fitting:
        return fitting
    raise ValidationError(
        "block sizes do not fit the allocation ratio",
        problems=[
            Problem(
                "randomisation.block_sizes",
                f"{list(sizes)} has no multiple of {unit} (the sum of the arms' ratios)",
            )
        ],
    )


def permuted_blocks(
    seed: np.random.SeedSequence,
    arms: Sequence[str],
    ratios: Sequence[int],
    sizes: Sequence[int],
) -> Iterator[tuple[str, ...]]:
    """Yield blocks forever: each of a size drawn uniformly from ``sizes``, randomly permuted.

    Each block holds every arm in proportion to its ratio, so the list is balanced at the end of
    every block; the random size keeps the end of a block (and so the next arm) unpredictable.
    """
    if len(arms) != len(ratios) or not arms:
        raise ValidationError("bad arms", problems=[Problem("arms", "one ratio per arm needed")])
    unit = sum(ratios)
    sizes = list(sizes)
    for s in sizes:
        if s % unit:
            raise ValidationError(
                "bad block size",
                problems=[Problem("block_sizes", f"{s} is not a multiple of {unit}")],
            )
    rng = np.random.default_rng(seed)
    while True:
        size = sizes[int(rng.integers(len(sizes)))]
        content = [arm for arm, r in zip(arms, ratios, strict=True) for _ in range(r)]
        block = content * (size // unit)
        yield tuple(block[int(i)] for i in rng.permutation(len(block)))


def allocation_list(
    seed: np.random.SeedSequence,
    arms: Sequence[str],
    ratios: Sequence[int],
    sizes: Sequence[int],
    *,
    min_slots: int,
    first_block: int = 1,
) -> list[Slot]:
    """Return whole blocks, numbered from 1, until at least ``min_slots`` slots are listed.

    Blocks before ``first_block`` are drawn (so the stream is the same) but not returned: this is
    how a list that ran out is extended with exactly the blocks that would have followed.
    """
    slots: list[Slot] = []
    position = 0
    for number, block in enumerate(permuted_blocks(seed, arms, ratios, sizes), start=1):
        if number >= first_block and position >= min_slots:
            break
        for arm in block:
            position += 1
            if number >= first_block:
                slots.append(Slot(position, number, arm))
    return slots
