"""Which examples each worker trains on at each step, and how they become tensors.

The plan is a pure function of (example lengths, step, seed), computed identically on
every worker: no data loader state to checkpoint, and a resumed run sees exactly the
batches it would have seen. Each optimizer step takes the next ``batch_size`` examples
of a per-epoch shuffle and splits them into ``num_ranks x micro_batches`` groups; every
worker runs the same number of micro-batches, which ZeRO-3's per-layer collectives need.

* Packing (default): a group becomes one row, its examples concatenated. Groups are
  balanced by token count (longest example first into the lightest group), so workers
  finish a step together. Examples must not attend to each other: ``position_ids``
  restart at 0 for each example, and transformers (5.x, ``masking_utils``) turns
  restarting positions into a block-diagonal causal mask when no 2D attention mask is
  given (sdpa and eager); flash-attention uses the same positions for varlen kernels.
* Padding (baseline): a group is a rectangular batch padded to its longest example,
  groups being consecutive slices of the shuffle (no length bucketing).

Pure (numpy only): ``selfalign.training.batches`` turns a group into tensors.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedDataset:
    """All examples' token ids in one flat array (cheap to ship to workers)."""

    ids: np.ndarray  # int32, all examples concatenated
    trainable: np.ndarray  # bool, same shape
    offsets: np.ndarray  # int64, len(examples) + 1

    @classmethod
    def from_examples(cls, examples: Sequence[tuple[Sequence[int], Sequence[bool]]]):
        lengths = [len(ids) for ids, _ in examples]
        offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((t for e, _ in examples for t in e), dtype=np.int32, count=offsets[-1])
        flags = np.fromiter((f for _, e in examples for f in e), dtype=bool, count=offsets[-1])
        return cls(ids, flags, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end], self.trainable[start:end]

    def targets(self, index: int) -> np.ndarray:
        """Next-token targets per position (already shifted), IGNORE_INDEX where untrained.

        Shifting per example, before packing, means the last token of one example can
        never be trained to predict the first token of the next.
        """
        ids, flags = self.example(index)
        out = np.full(len(ids), IGNORE_INDEX, dtype=np.int64)
        out[:-1] = np.where(flags[1:], ids[1:], IGNORE_INDEX)
        return out


@functools.lru_cache(maxsize=8)
def epoch_order(num_examples: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(num_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return tuple(order)


def examples_for_step(num_examples: int, step: int, batch_size: int, seed: int) -> list[int]:
    """The ``batch_size`` example indices of optimizer step ``step`` (0-based).

    Steps walk through one shuffle per epoch and continue into the next one.
    """
    out: list[int] = []
    position = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position + len(out), num_examples)
        take = min(batch_size - len(out), num_examples - offset)
        out.extend(epoch_order(num_examples, seed, epoch)[offset : offset + take])
    return out


def balanced_groups(
    indices: Sequence[int], lengths: Sequence[int], num_groups: int
) -> list[list[int]]:
    """Split ``indices`` into ``num_groups`` groups of near-equal total length (greedy LPT)."""
    if len(indices) < num_groups:
        raise ValueError(f"{len(indices)} examples cannot fill {num_groups} micro-batches")
    groups: list[list[int]] = [[] for _ in range(num_groups)]
    heap = [(0, g) for g in range(num_groups)]
    # Longest first; ties broken by index so every worker computes the same plan.
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        total, group = heapq.heappop(heap)
        groups[group].append(index)
        heapq.heappush(heap, (total + lengths[index], group))
    # Empty groups are impossible (>= one example each: each pop takes the lightest).
    return groups


def sequential_groups(indices: Sequence[int], num_groups: int) -> list[list[int]]:
    """Consecutive slices, sizes differing by at most one (the unsorted padding baseline)."""
    if len(indices) < num_groups:
        raise ValueError(f"{len(indices)} examples cannot fill {num_groups} micro-batches")
    size, extra = divmod(len(indices), num_groups)
    groups, start = [], 0
    for g in range(num_groups):
        end = start + size + (1 if g < extra else 0)
        groups.append(list(indices[start:end]))
        start = end
    return groups


def plan_step(
    lengths: Sequence[int],
    *,
    step: int,
    batch_size: int,
    num_ranks: int,
    micro_batches: int,
    seed: int,
    packing: bool,
) -> list[list[list[int]]]:
    """``plan[rank][micro_batch]`` = example indices for optimizer step ``step``."""
    indices = examples_for_step(len(lengths), step, batch_size, seed)
    num_groups = num_ranks * micro_batches
    if packing:
        groups = balanced_groups(indices, lengths, num_groups)
    else:
        groups = sequential_groups(indices, num_groups)
    return [groups[rank * micro_batches : (rank + 1) * micro_batches] for rank in range(num_ranks)]


def computed_tokens(lengths: Sequence[int], group: Sequence[int], packing: bool) -> int:
    """Token positions the model computes for one micro-batch (real + padding)."""
    if packing:
        return sum(lengths[i] for i in group)
    return len(group) * max(lengths[i] for i in group)
