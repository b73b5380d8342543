"""Engine settings: vLLM, sampling, and the config shared by the resumable engine stages.

Pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from selfalign.core.config import DEFAULT_MODEL, Placement, Strict


class VLLMSettings(Strict):
    """Settings passed to ``vllm.LLM``/``AsyncEngineArgs``."""

    dtype: str = Field(
        "auto",
        description="'auto' = float32 on CPU (bf16 is ~6x slower on AVX2-only CPUs), bfloat16 on GPU.",
    )
    max_model_len: int = Field(4096, ge=64)
    enable_prefix_caching: bool = Field(True, description="Share KV of identical prompt prefixes.")
    max_num_seqs: int = Field(256, ge=1, description="Sequences the scheduler runs at once.")
    max_num_batched_tokens: int | None = Field(None, ge=64)
    cpu_kv_cache_gib: int = Field(
        2, ge=1, description="KV cache size on CPU (GiB, VLLM_CPU_KVCACHE_SPACE)."
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enforce_eager: bool | None = Field(
        None,
        description="None = eager on CPU (torch.compile warm-up costs 60 s+ there and measured "
        "no faster), CUDA graphs on GPU.",
    )
    seed: int = 0

    def resolved_dtype(self, device: str) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if device == "cpu" else "bfloat16"

    def resolved_enforce_eager(self, device: str) -> bool:
        if self.enforce_eager is not None:
            return self.enforce_eager
        return device == "cpu"


class SamplingSettings(Strict):
    """Default sampling; a row may override any field with its own ``sampling_params``."""

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = Field(False, description="Always generate max_tokens (benchmarks).")


class StageJobConfig(Placement):
    """Shared by the resumable engine stages (backtranslate, curate, and recipes' own)."""

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.core.models).")
    input: str | None = Field(
        None, description="Input rows: JSONL/Parquet file, directory or glob."
    )
    output: str = Field(..., description="Stage output directory (local or object store).")
    id_column: str = Field("id", description="Unique, stable row id: the resume key.")
    vllm: VLLMSettings = VLLMSettings()
    sampling: SamplingSettings = SamplingSettings()
    limit: int | None = Field(None, ge=1, description="Process only the first N input rows.")

    # Where the output goes does not change what is computed (a moved run resumes).
    resume_ignore: ClassVar[frozenset[str]] = Placement.resume_ignore | {"output"}
