"""A micro-batch's tensors: one packed row, or a padded rectangle (see ``packing``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selfalign.training.packing import IGNORE_INDEX, TokenizedDataset


def collate_packed(data: TokenizedDataset, group: Sequence[int]) -> dict:
    """One row: the group's examples end to end, positions restarting per example."""
    import torch

    ids = np.concatenate([data.example(i)[0] for i in group])
    targets = np.concatenate([data.targets(i) for i in group])
    positions = np.concatenate([np.arange(data.lengths[i]) for i in group])
    return {
        "input_ids": torch.from_numpy(ids.astype(np.int64))[None],
        "position_ids": torch.from_numpy(positions.astype(np.int64))[None],
        "targets": torch.from_numpy(targets)[None],
    }


def collate_padded(data: TokenizedDataset, group: Sequence[int], pad_id: int) -> dict:
    """A rectangular batch, right-padded to the group's longest example."""
    import torch

    width = max(int(data.lengths[i]) for i in group)
    ids = np.full((len(group), width), pad_id, dtype=np.int64)
    targets = np.full((len(group), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(group), width), dtype=np.int64)
    for row, index in enumerate(group):
        length = int(data.lengths[index])
        ids[row, :length] = data.example(index)[0]
        targets[row, :length] = data.targets(index)
        mask[row, :length] = 1
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "targets": torch.from_numpy(targets),
    }
