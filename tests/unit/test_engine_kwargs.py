"""Engine arguments derived from the configs (no vLLM needed)."""

from __future__ import annotations

from selfalign.core.resources import StageResources
from selfalign.engine.config import SamplingSettings, VLLMSettings
from selfalign.engine.processor import EngineSpec, engine_kwargs


def _spec(device: str, **vllm) -> EngineSpec:
    return EngineSpec(
        model_path="/m",
        resources=StageResources(),
        vllm=VLLMSettings(**vllm),
        sampling=SamplingSettings(),
        device=device,
        operation="generate",
    )


def test_cpu_prefills_each_prompt_in_one_step():
    # A chunked prefill of a seeded request kills vLLM 0.32's CPU engine core.
    kwargs = engine_kwargs(_spec("cpu", max_model_len=4096))
    assert kwargs["enable_chunked_prefill"] is False
    assert kwargs["max_num_batched_tokens"] >= 4096
    small = engine_kwargs(_spec("cpu", max_model_len=512))
    assert small["max_num_batched_tokens"] == 2048
    own = engine_kwargs(_spec("cpu", max_model_len=1024, max_num_batched_tokens=8192))
    assert own["max_num_batched_tokens"] == 8192


def test_gpu_keeps_chunked_prefill():
    kwargs = engine_kwargs(_spec("cuda", max_model_len=4096))
    assert "enable_chunked_prefill" not in kwargs
