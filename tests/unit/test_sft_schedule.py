"""The paper's schedule defaults: steps by data size, batch size, learning rate."""

from __future__ import annotations

import pytest

from selfalign.training.schedule import batch_size_for_data_size, lr_at, steps_for_data_size


@pytest.mark.parametrize(
    ("examples", "steps"),
    [
        (1, 500),
        (3_200, 500),
        (3_201, 600),
        (6_400, 600),
        (12_800, 600),
        (25_600, 1_200),
        (51_200, 1_600),
        (102_400, 3_200),
    ],
)
def test_steps_follow_the_paper_table(examples, steps):
    assert steps_for_data_size(examples) == steps


def test_no_data_is_an_error():
    with pytest.raises(ValueError):
        steps_for_data_size(0)


def test_batch_size_is_8_below_3000_examples_else_32():
    assert batch_size_for_data_size(2_999) == 8
    assert batch_size_for_data_size(3_000) == 32


def test_lr_decays_linearly_from_peak_to_floor():
    rates = [lr_at(s, total_steps=500, peak=1e-5, floor=9e-6) for s in range(500)]
    assert rates[0] == pytest.approx(1e-5)
    assert rates[-1] == pytest.approx(9e-6)
    steps = [a - b for a, b in zip(rates, rates[1:], strict=False)]
    assert all(d == pytest.approx(steps[0]) for d in steps)  # linear
    assert steps[0] > 0


def test_warmup_then_decay():
    rates = [lr_at(s, total_steps=10, peak=1.0, floor=0.5, warmup_steps=4) for s in range(10)]
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert rates[4] == pytest.approx(1.0 - 0.5 / 6)
    assert rates[-1] == pytest.approx(0.5)


def test_step_outside_the_run_is_an_error():
    with pytest.raises(ValueError):
        lr_at(10, total_steps=10, peak=1.0, floor=0.5)
