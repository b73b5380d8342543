"""``selfalign train`` configuration (pure pydantic; loaded with ``selfalign.core.config.build_config``).

Resources (workers, CPUs/GPUs, ZeRO stage) are not here: they come from the
``train`` section of the chosen profile in ``ray_config.yaml``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from selfalign.core.config import DEFAULT_MODEL, Placement, Strict
from selfalign.formats.conversations import ChatFormat

LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraSettings(Strict):
    """Train low-rank adapters (peft) instead of all weights; merged into the export."""

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(LLAMA_LINEAR_MODULES),
        description="Linear module names to adapt (Llama-style names by default).",
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: load the frozen base in 4-bit NF4 (CUDA + bitsandbytes only).",
    )


class TrainConfig(Placement):
    """One fine-tuning run (the backward, seed or curated model of a loop, or any SFT)."""

    chat_format: ChatFormat = Field(
        "seed",
        description="The conversation each row becomes: backward (response -> instruction), "
        "seed (instruction -> response) or curated (seed + augmented pairs, source tags).",
    )
    objective: Literal["sft"] = Field(
        "sft", description="The training loss (selfalign.training.objectives)."
    )
    model: str = Field(
        DEFAULT_MODEL, description="Base model reference (see selfalign.core.models)."
    )
    input: str | None = Field(
        None,
        description="Training rows: JSONL/Parquet file, directory or glob. Default: the embedded seed pairs.",
    )
    output: str = Field(
        "runs/train", description="Run directory: model/, metrics.jsonl, checkpoints/."
    )
    limit: int | None = Field(None, ge=1, description="Train on the first N rows only.")
    source_tags: bool = Field(
        True, description="curated format: put each pair's source tag in the system prompt."
    )

    max_seq_len: int = Field(2048, ge=16, description="Examples are truncated to this many tokens.")
    packing: bool = Field(
        True, description="Pack each micro-batch into one row (False: pad per example)."
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Examples per optimizer step over all workers; default: the paper's 32 (8 below 3,000 examples).",
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per worker per optimizer step."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Optimizer steps; default: the paper's table by data size."
    )

    lr: float = Field(1e-5, gt=0, description="Peak learning rate.")
    lr_floor: float = Field(
        9e-6, ge=0, description="Learning rate reached at the last step (linear decay)."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps before the decay.")
    weight_decay: float = Field(
        0.1, ge=0, description="AdamW weight decay (not on norms or biases)."
    )
    adam_betas: tuple[float, float] = (0.9, 0.95)
    dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Set on the model's dropout config fields (Llama: attention_dropout).",
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping (0 = off).")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on GPU."
    )
    gradient_checkpointing: bool = False
    seed: int = 0

    checkpoint_every: int = Field(
        100, ge=1, description="Save a Ray Train checkpoint every K steps."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept in storage.")
    max_failures: int = Field(
        3, ge=-1, description="Worker/run failures to recover from (-1: no limit)."
    )
    log_every: int = Field(1, ge=1, description="Write a metrics row every N steps.")
    export: bool = Field(True, description="Write the final model as a Hugging Face directory.")

    lora: LoraSettings | None = None

    # How a run is kept and watched, not what it trains: a rerun that differs only in
    # these resumes the same run.
    resume_ignore: ClassVar[frozenset[str]] = Placement.resume_ignore | {
        "output",
        "max_failures",
        "keep_checkpoints",
        "log_every",
        "export",
    }

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "recipe" in data:
            raise ValueError(
                "'recipe' was renamed 'chat_format' (a recipe is now a whole pipeline, "
                "selfalign run <recipe>): write chat_format: " + str(data["recipe"])
            )
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.lr_floor > self.lr:
            raise ValueError(f"lr_floor ({self.lr_floor}) is above lr ({self.lr})")
        if self.max_steps is not None and self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be below max_steps ({self.max_steps})"
            )
        return self

    def resolved_dtype(self, device: str) -> str:
        if self.dtype != "auto":
            return self.dtype
        # fp16 is not an option on CPU, and bf16 is ~6x slower than fp32 on AVX2-only CPUs.
        return "float32" if device == "cpu" else "bfloat16"
