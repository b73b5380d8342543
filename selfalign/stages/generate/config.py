"""``selfalign generate``: stream any rows through the engine (pure config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from selfalign.core.config import DEFAULT_MODEL, Placement
from selfalign.engine.config import SamplingSettings, VLLMSettings


class GenerateConfig(Placement):
    """``selfalign generate``: stream rows through the engine and write Parquet shards."""

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.core.models).")
    input: str | None = Field(
        None,
        description="JSONL/Parquet file, directory or glob; any pyarrow filesystem. Default: the embedded sample prompts.",
    )
    output: str = Field("runs/generate", description="Output directory (local or object store).")
    operation: Literal["generate", "logprobs"] = "generate"
    logprobs_top_k: int = Field(20, ge=1, le=100)
    sampling: SamplingSettings = SamplingSettings()
    vllm: VLLMSettings = VLLMSettings()
    limit: int | None = Field(None, ge=1, description="Process only the first N rows.")

    resume_ignore: ClassVar[frozenset[str]] = Placement.resume_ignore | {"output"}
