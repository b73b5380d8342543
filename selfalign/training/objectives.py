"""Training objectives: the loss behind one interface, so the loop and the driver know
nothing of what is optimised.

An objective turns a micro-batch (a group of example indices) into tensors and returns
the *sum* of its loss over the micro-batch's *units*, and says how many units each
example holds. The loop scales each sum by ``ranks x accumulation / units of the whole step``,
so a step's gradient is that of the mean loss per unit over every example of the step,
however the examples were split across workers and micro-batches.

``SFT``: units are target tokens (assistant tokens, see ``selfalign.formats.labels``);
the loss is the summed token cross-entropy. A pairwise preference objective (DPO/SPIN)
is another implementation: units are pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from selfalign.training.batches import collate_packed, collate_padded
from selfalign.training.packing import IGNORE_INDEX, TokenizedDataset


class Objective(Protocol):
    name: str

    def unit_counts(self, data: TokenizedDataset) -> list[int]:
        """Per example, how many of the units the loss is averaged over (tokens, pairs...)."""
        ...

    def batch(self, data: TokenizedDataset, group: Sequence[int]) -> dict[str, Any]:
        """The group's tensors (on the CPU)."""
        ...

    def summed_loss(self, model, batch: dict[str, Any]):
        """The loss summed over the batch's units (a scalar tensor)."""
        ...


class SFT:
    """Supervised fine-tuning: cross-entropy of the target tokens, packed or padded."""

    name = "sft"

    def __init__(self, *, packing: bool, pad_id: int):
        self.packing = packing
        self.pad_id = pad_id

    def unit_counts(self, data: TokenizedDataset) -> list[int]:
        return [int((data.targets(i) != IGNORE_INDEX).sum()) for i in range(len(data))]

    def batch(self, data: TokenizedDataset, group: Sequence[int]) -> dict[str, Any]:
        if self.packing:
            return collate_packed(data, group)
        return collate_padded(data, group, self.pad_id)

    def summed_loss(self, model, batch: dict[str, Any]):
        """Sum of token cross-entropies over the batch's targets.

        Logits are computed only at positions that have a target (``logits_to_keep``):
        the vocabulary projection is a large share of a small model's cost and prompt
        tokens need none.
        """
        import torch
        import torch.nn.functional as F

        batch = dict(batch)
        targets = batch.pop("targets")
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        output = model(**batch, logits_to_keep=keep, use_cache=False)
        logits = output.logits.float()
        kept = targets[:, keep]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            kept.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        ).to(torch.float32)


def build_objective(name: str, *, packing: bool, pad_id: int) -> Objective:
    if name == "sft":
        return SFT(packing=packing, pad_id=pad_id)
    raise ValueError(f"unknown objective {name!r}")
