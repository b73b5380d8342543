"""What an evaluation measures, and of which model (pure)."""

from __future__ import annotations

from pydantic import Field

from selfalign.core.config import Strict
from selfalign.formats.conversations import ChatFormat


class EvaluateConfig(Strict):
    """Held-out loss and sample generations of one model."""

    model: str = Field(..., description="Model reference to evaluate.")
    heldout: str = Field(..., description="Held-out pairs (Parquet directory).")
    output: str = Field(..., description="Where the result JSON is written.")
    chat_format: ChatFormat = Field(
        "seed", description="The chat format the model was trained in (how it is prompted)."
    )
    source_tag: str | None = Field(
        None,
        description="curated format: the source tag to prompt with (the paper's best: seed).",
    )
    prompts: list[str] | None = Field(
        None,
        description="Fixed prompts for sample generations; default: selfalign/data/eval_prompts.jsonl.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens per sample generation.")
    max_seq_len: int = Field(2048, ge=16, description="Held-out pairs are truncated to this.")
