"""The step loop: the per-step plan, the objective, the optimizer — and nothing of Ray.

``run_steps`` drives any engine with DeepSpeed's surface (call = forward, ``backward``,
``step``, ``get_global_grad_norm``): a DeepSpeed engine in the Ray Train workers, or
``PlainEngine`` over a plain torch model and optimizer, so that the same loop runs in
one process without Ray or DeepSpeed (benchmarks, a lent GPU). What happens after a step
(metrics, checkpoints, reports) is the caller's ``on_step``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from selfalign.training.config import TrainConfig
from selfalign.training.objectives import Objective
from selfalign.training.packing import TokenizedDataset, computed_tokens, plan_step
from selfalign.training.schedule import lr_at


@dataclass(frozen=True)
class StepRecord:
    step: int  # optimizer steps done
    loss: float  # the step's mean loss per unit, over every rank
    lr: float
    grad_norm: float | None
    tokens_per_s: float
    computed_tokens: int  # token positions computed (real + padding), all ranks
    tokens: int  # real tokens, all ranks
    targets: int  # units the loss averaged over (target tokens for SFT)
    step_s: float
    epoch: float

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["loss"] = round(self.loss, 6)
        out["tokens_per_s"] = round(self.tokens_per_s, 2)
        out["step_s"] = round(self.step_s, 4)
        out["epoch"] = round(self.epoch, 4)
        return out


def param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on matrices, none on norms and biases (1-D parameters)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        # Under ZeRO-3 a parameter is already partitioned (flat); ds_shape is its real shape.
        shape = getattr(param, "ds_shape", param.shape)
        (decay if len(shape) >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class PlainEngine:
    """DeepSpeed's engine surface over a plain torch model and optimizer (one process).

    As DeepSpeed does: ``backward`` divides the loss by the accumulation steps, and
    ``step`` clips and steps the optimizer once every ``accumulation_steps`` calls.
    """

    def __init__(self, model, optimizer, *, accumulation_steps: int, max_grad_norm: float):
        self.module = model
        self.optimizer = optimizer
        self.accumulation_steps = accumulation_steps
        self.max_grad_norm = max_grad_norm
        self.device = next(model.parameters()).device
        self._micro = 0
        self._grad_norm: float | None = None

    def __call__(self, **batch):
        return self.module(**batch)

    def train(self) -> None:
        self.module.train()

    def backward(self, loss) -> None:
        (loss / self.accumulation_steps).backward()

    def step(self) -> None:
        import torch

        self._micro += 1
        if self._micro % self.accumulation_steps:
            return
        parameters = [p for p in self.module.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(parameters, self.max_grad_norm or float("inf"))
        self._grad_norm = float(norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_global_grad_norm(self) -> float | None:
        return self._grad_norm


def grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    value = float(norm)
    return round(value, 6) if math.isfinite(value) else value


def run_steps(
    engine,
    optimizer,
    *,
    data: TokenizedDataset,
    objective: Objective,
    config: TrainConfig,
    batch_size: int,
    total_steps: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    all_reduce: Callable[[Any], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> None:
    """Train steps ``start_step + 1 .. total_steps`` on this rank's share of each step."""
    import torch

    lengths = [int(n) for n in data.lengths]
    units_per_example = objective.unit_counts(data)
    device = engine.device
    engine.train()
    for step in range(start_step, total_steps):
        lr = lr_at(
            step,
            total_steps=total_steps,
            peak=config.lr,
            floor=config.lr_floor,
            warmup_steps=config.warmup_steps,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        plan = plan_step(
            lengths,
            step=step,
            batch_size=batch_size,
            num_ranks=world,
            micro_batches=config.gradient_accumulation_steps,
            seed=config.seed,
            packing=config.packing,
        )
        all_groups = [g for rank_groups in plan for g in rank_groups]
        step_units = sum(units_per_example[i] for g in all_groups for i in g)
        # DeepSpeed divides by the accumulation steps and averages over ranks; this scale
        # turns the sum of per-unit losses into the mean over every unit of the step.
        scale = world * config.gradient_accumulation_steps / step_units
        started = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for group in plan[rank]:
            batch = {k: v.to(device) for k, v in objective.batch(data, group).items()}
            summed = objective.summed_loss(engine, batch)
            engine.backward(summed * scale)
            engine.step()
            loss_sum += summed.detach().double().cpu()
        if all_reduce is not None:
            all_reduce(loss_sum)  # one tiny collective: the step's loss on every rank
        elapsed = time.perf_counter() - started
        done = step + 1
        real_tokens = sum(lengths[i] for g in all_groups for i in g)
        record = StepRecord(
            step=done,
            loss=loss_sum.item() / step_units,
            lr=lr,
            grad_norm=grad_norm(engine),
            tokens_per_s=real_tokens / elapsed if elapsed else 0.0,
            computed_tokens=sum(computed_tokens(lengths, g, config.packing) for g in all_groups),
            tokens=real_tokens,
            targets=step_units,
            step_s=elapsed,
            epoch=done * batch_size / len(data),
        )
        if on_step is not None:
            on_step(record)
