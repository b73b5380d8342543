"""The engine: a Ray Data stage that streams rows through an autoscaling pool of vLLM actors.

Built on ``ray.data.llm`` (the vLLM engine stage of Ray's batch-LLM module): each actor
holds one ``AsyncLLMEngine``; several batches are kept in flight per actor so that vLLM's
continuous batching never idles between Ray Data batches; per-row failures are caught
(``should_continue_on_error``) and a dead engine makes its actor exit so that Ray Data
replaces it and retries the batch.

This module only adapts configs; what a row means is decided in ``selfalign.engine.rows``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from selfalign.core.resources import StageResources
from selfalign.engine.config import SamplingSettings, VLLMSettings
from selfalign.engine.rows import finish_response, prepare_request

log = logging.getLogger(__name__)

Operation = Literal["generate", "logprobs"]


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine stage needs; one object across the runtime boundary."""

    model_path: str
    resources: StageResources
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    device: Literal["cpu", "cuda"] = "cpu"
    operation: Operation = "generate"
    logprobs_top_k: int = 20


@functools.lru_cache(maxsize=4)
def _tokenizer(model_path: str):
    # One tokenizer per worker process, loaded on first use.
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


def render_chat(model_path: str, messages: list[dict[str, str]]) -> str:
    """Render messages with the model's own chat template, ready for the reply.

    A final assistant message is a pre-filled start of the reply (e.g. "Score:"): the
    template leaves that turn open so the model continues it.
    """
    prefilled = messages[-1]["role"] == "assistant"
    return _tokenizer(model_path).apply_chat_template(
        messages,
        tokenize=False,
        add_generation_prompt=not prefilled,
        continue_final_message=prefilled,
    )


def _preprocess(row: dict[str, Any], *, spec: EngineSpec) -> dict[str, Any]:
    return prepare_request(
        row,
        render_chat=functools.partial(render_chat, spec.model_path),
        sampling_defaults=spec.sampling.model_dump(),
        operation=spec.operation,
        logprobs_top_k=spec.logprobs_top_k,
    )


def _postprocess(row: dict[str, Any], *, spec: EngineSpec) -> dict[str, Any]:
    return finish_response(row, operation=spec.operation, logprobs_top_k=spec.logprobs_top_k)


def engine_kwargs(spec: EngineSpec) -> dict[str, Any]:
    settings, resources = spec.vllm, spec.resources
    kwargs: dict[str, Any] = {
        "dtype": settings.resolved_dtype(spec.device),
        "max_model_len": settings.max_model_len,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "max_num_seqs": settings.max_num_seqs,
        "tensor_parallel_size": resources.tensor_parallel_size,
        "enforce_eager": settings.resolved_enforce_eager(spec.device),
        "seed": settings.seed,
        "disable_log_stats": True,
    }
    if settings.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = settings.max_num_batched_tokens
    if spec.device == "cpu":
        # vLLM 0.32's CPU runner crashes its engine core ("CPU Generator does not use
        # offset") when a chunked prefill discards the sampled token of a request that
        # has its own seed, and Ray Data then retries the batch forever. Every sampled
        # request here has a seed, so on CPU a prompt is always prefilled in one step:
        # the step budget must then hold the longest prompt.
        kwargs["enable_chunked_prefill"] = False
        if settings.max_model_len and not settings.max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = max(2048, settings.max_model_len)
    if spec.device == "cuda":
        kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        if resources.tensor_parallel_size > 1:
            kwargs["distributed_executor_backend"] = "ray"
    return kwargs


def engine_env(spec: EngineSpec) -> dict[str, str]:
    """Environment for the engine actors (CPU thread and KV-cache settings)."""
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if spec.device == "cpu":
        # Ray sets OMP_NUM_THREADS to the actor's CPU reservation (often 1); vLLM's
        # CPU kernels then use one core. Give the engine the threads it is meant to use.
        threads = spec.resources.omp_threads or max(1, math.ceil(spec.resources.cpus_per_actor))
        env["OMP_NUM_THREADS"] = str(threads)
        env["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        env["VLLM_CPU_KVCACHE_SPACE"] = str(spec.vllm.cpu_kv_cache_gib)
    return env


def placement_group(spec: EngineSpec) -> dict[str, Any]:
    """One bundle per tensor-parallel rank; without it the actor waits for a GPU on CPU."""
    resources = spec.resources
    bundle: dict[str, float] = {"CPU": resources.cpus_per_actor}
    if spec.device == "cuda":
        bundle["GPU"] = max(1.0, resources.gpus_per_actor)
    return {"bundles": [bundle] * resources.tensor_parallel_size, "strategy": "PACK"}


def build_engine(spec: EngineSpec):
    """A callable ``Dataset -> Dataset`` (a ``ray.data.llm`` processor)."""
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    resources = spec.resources
    concurrency: int | tuple[int, int] = (
        resources.min_actors
        if resources.min_actors == resources.max_actors
        else (resources.min_actors, resources.max_actors)
    )
    config = vLLMEngineProcessorConfig(
        model_source=spec.model_path,
        engine_kwargs=engine_kwargs(spec),
        batch_size=resources.batch_size,
        max_concurrent_batches=resources.max_concurrent_batches,
        concurrency=concurrency,
        placement_group_config=placement_group(spec),
        runtime_env={"env_vars": engine_env(spec)},
        should_continue_on_error=True,
        # Prompts are rendered in our preprocess with the model's own chat template,
        # and vLLM tokenises/detokenises itself: the extra Ray stages would only add hops.
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=False,
        log_engine_metrics=False,
    )
    # No processor postprocess: ray.data.llm lets error rows bypass it, and we want one
    # function (finish_response) to shape every row, failed or not; run_engine maps it.
    return build_processor(config, preprocess=functools.partial(_preprocess, spec=spec))


def run_engine(ds, spec: EngineSpec):
    """Apply the engine to a dataset (lazy: nothing runs until the dataset is consumed)."""
    log.info(
        "engine: %s over %s (actors %d-%d, batch %d)",
        spec.operation,
        spec.model_path,
        spec.resources.min_actors,
        spec.resources.max_actors,
        spec.resources.batch_size,
    )
    return build_engine(spec)(ds).map(functools.partial(_postprocess, spec=spec))
