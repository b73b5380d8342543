"""How long and how fast to train: the paper's defaults as pure functions.

Humback reports: learning rate 1e-5 decaying linearly to 9e-6, batch 32 (8 when the
data has fewer than 3,000 examples), and a number of steps that grows with the data
(table below). Warmup is not reported; it is available and defaults to none.
"""

from __future__ import annotations

import math

# (number of training examples, optimizer steps) as reported in the paper.
PAPER_STEPS_BY_DATA_SIZE: tuple[tuple[int, int], ...] = (
    (3_200, 500),
    (6_400, 600),
    (12_800, 600),
    (25_600, 1_200),
    (51_200, 1_600),
)
SMALL_DATA_THRESHOLD = 3_000
PAPER_BATCH_SIZE = 32
PAPER_SMALL_BATCH_SIZE = 8


def steps_for_data_size(num_examples: int) -> int:
    """Steps for ``num_examples``: the first table row whose size covers the data.

    Beyond the table the last row's examples-per-step ratio is kept (the paper stops
    at 51.2k examples), so the number of epochs stays what it was there.

    >>> steps_for_data_size(3_200), steps_for_data_size(3_201), steps_for_data_size(102_400)
    (500, 600, 3200)
    """
    if num_examples < 1:
        raise ValueError("no training examples")
    for size, steps in PAPER_STEPS_BY_DATA_SIZE:
        if num_examples <= size:
            return steps
    last_size, last_steps = PAPER_STEPS_BY_DATA_SIZE[-1]
    return math.ceil(last_steps * num_examples / last_size)


def batch_size_for_data_size(num_examples: int) -> int:
    """Examples per optimizer step: 32, or 8 below 3,000 examples.

    >>> batch_size_for_data_size(2_999), batch_size_for_data_size(3_000)
    (8, 32)
    """
    return PAPER_SMALL_BATCH_SIZE if num_examples < SMALL_DATA_THRESHOLD else PAPER_BATCH_SIZE


def lr_at(
    step: int, *, total_steps: int, peak: float, floor: float, warmup_steps: int = 0
) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup to ``peak`` over ``warmup_steps`` steps, then linear decay that reaches
    ``floor`` exactly at the last step.

    >>> [round(lr_at(s, total_steps=3, peak=1e-5, floor=9e-6) * 1e6, 3) for s in range(3)]
    [10.0, 9.5, 9.0]
    """
    if not 0 <= step < total_steps:
        raise ValueError(f"step {step} outside 0..{total_steps - 1}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    # The decay starts at the step that reached the peak (the last warmup step, or 0),
    # so no two consecutive steps share the peak rate.
    peak_step = max(warmup_steps - 1, 0)
    decay_steps = total_steps - 1 - peak_step
    if decay_steps <= 0:
        return peak
    progress = (step - peak_step) / decay_steps
    return peak + (floor - peak) * progress
