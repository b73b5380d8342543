"""The step plan (pure) and packed rows (examples must not see each other)."""

from __future__ import annotations

import numpy as np
import pytest

from selfalign.training.batches import collate_packed, collate_padded
from selfalign.training.packing import (
    IGNORE_INDEX,
    TokenizedDataset,
    balanced_groups,
    computed_tokens,
    examples_for_step,
    plan_step,
)


def dataset(lengths, seed=0):
    rng = np.random.default_rng(seed)
    examples = []
    for n in lengths:
        ids = rng.integers(10, 1000, size=n).tolist()
        # The second half of each example is its "reply".
        flags = [i >= n // 2 for i in range(n)]
        examples.append((ids, flags))
    return TokenizedDataset.from_examples(examples)


def test_each_epoch_visits_every_example_once_and_steps_continue_across_epochs():
    seen = [i for step in range(5) for i in examples_for_step(10, step, 4, seed=1)]
    assert sorted(seen[:10]) == list(range(10))  # epoch 0
    assert sorted(seen[10:20]) == list(range(10))  # epoch 1 continues mid-step
    assert seen[:10] != seen[10:20]  # reshuffled per epoch
    assert examples_for_step(10, 3, 4, seed=1) == examples_for_step(10, 3, 4, seed=1)
    assert examples_for_step(10, 0, 4, seed=1) != examples_for_step(10, 0, 4, seed=2)


def test_plan_gives_every_rank_the_same_number_of_micro_batches():
    lengths = [5, 400, 30, 30, 200, 7, 90, 60, 300, 12, 40, 8]
    for packing in (True, False):
        plan = plan_step(
            lengths, step=0, batch_size=12, num_ranks=2, micro_batches=3, seed=0, packing=packing
        )
        assert [len(p) for p in plan] == [3, 3]
        flat = sorted(i for rank in plan for group in rank for i in group)
        assert flat == sorted(examples_for_step(12, 0, 12, seed=0))
        assert all(group for rank in plan for group in rank)


def test_packing_groups_are_balanced_by_tokens():
    lengths = [500, 400, 300, 100, 100, 100, 50, 50]
    groups = balanced_groups(range(8), lengths, 2)
    totals = sorted(sum(lengths[i] for i in g) for g in groups)
    assert totals == [800, 800]
    with pytest.raises(ValueError):
        balanced_groups([0], lengths, 2)


def test_computed_tokens_counts_padding():
    lengths = [10, 100, 30]
    assert computed_tokens(lengths, [0, 1, 2], packing=True) == 140
    assert computed_tokens(lengths, [0, 1, 2], packing=False) == 300


def test_targets_are_shifted_within_each_example():
    data = TokenizedDataset.from_examples(
        [([1, 2, 3, 4], [False, False, True, True]), ([5, 6], [False, True])]
    )
    assert data.targets(0).tolist() == [IGNORE_INDEX, 3, 4, IGNORE_INDEX]
    assert data.targets(1).tolist() == [6, IGNORE_INDEX]
    packed = collate_packed(data, [0, 1])
    assert packed["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1]]
    # The last token of example 0 is never trained to predict example 1's first token.
    assert packed["targets"].tolist() == [[IGNORE_INDEX, 3, 4, IGNORE_INDEX, 6, IGNORE_INDEX]]
    padded = collate_padded(data, [1, 0], pad_id=0)
    assert padded["input_ids"].tolist() == [[5, 6, 0, 0], [1, 2, 3, 4]]
    assert padded["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_packed_forward_equals_separate_forwards(tiny_model_path):
    """Per-token losses of a packed row match each example run alone: no cross-attention."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(
        tiny_model_path, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    data = dataset([23, 7, 41, 16])

    def token_losses(batch):
        targets = batch.pop("targets")
        with torch.no_grad():
            logits = model(**batch, use_cache=False).logits
        losses = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        return losses[targets != IGNORE_INDEX]

    separate = torch.cat([token_losses(collate_packed(data, [i])) for i in range(4)])
    packed = token_losses(collate_packed(data, [0, 1, 2, 3]))
    padded = token_losses(collate_padded(data, [0, 1, 2, 3], pad_id=0))
    # Every reply token (second half of each example) is a target exactly once.
    assert packed.shape == separate.shape == (sum(n - n // 2 for n in [23, 7, 41, 16]),)
    torch.testing.assert_close(packed, separate, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(padded, separate, atol=1e-4, rtol=1e-4)

    # The same row with positions running on (one long sequence) does differ: the
    # restart of position_ids is what separates the examples.
    leaky = collate_packed(data, [0, 1, 2, 3])
    leaky["position_ids"] = torch.arange(leaky["input_ids"].shape[1])[None]
    assert not torch.allclose(token_losses(leaky), separate, atol=1e-3)
