"""Typed configuration: pydantic models loaded from YAML, with command-line overrides.

Two files describe a run:

* a *job config* (``jobs/configs/*.yaml`` or ``--config``): what to do — model,
  input/output, sampling, engine settings;
* ``ray_config.yaml``: how the pipeline maps onto Ray resources — per stage the
  number of vLLM actors, CPUs/GPUs per actor, batch size, tensor-parallel size —
  in named profiles (``local`` for a CPU machine, ``gpu`` for a cluster).

Overrides use dotted keys (``sampling.max_tokens=64``); values are parsed as YAML
scalars so ``true``, ``3`` and ``0.7`` get their natural types. Every output
directory gets the fully resolved config beside it (``_selfalign_config.yaml``).

This module is pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
# Leading underscore: pyarrow and Ray Data skip such files when reading a directory of
# shards, so the config can live beside the Parquet files it describes.
RESOLVED_CONFIG_NAME = "_selfalign_config.yaml"


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what to fix."""


class _Strict(BaseModel):
    # Unknown keys are errors: a typo in YAML must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- resources


class StageResources(_Strict):
    """Ray resources for one pipeline stage's pool of vLLM engine actors."""

    min_actors: int = Field(1, ge=1, description="Smallest engine-actor pool (autoscaling floor).")
    max_actors: int = Field(1, ge=1, description="Largest engine-actor pool (autoscaling ceiling).")
    cpus_per_actor: float = Field(1.0, ge=0, description="Ray CPUs reserved per engine actor.")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per actor (per TP rank on GPU).")
    batch_size: int = Field(32, ge=1, description="Rows handed to an actor per Ray Data batch.")
    max_concurrent_batches: int = Field(
        4,
        ge=1,
        description="Batches in flight per actor; >1 keeps the engine's continuous batching fed.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor-parallel degree.")
    omp_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the engine (CPU only); default: cpus_per_actor rounded up.",
    )

    @model_validator(mode="after")
    def _check(self) -> StageResources:
        if self.max_actors < self.min_actors:
            raise ValueError(f"max_actors ({self.max_actors}) < min_actors ({self.min_actors})")
        return self

    @property
    def uses_gpu(self) -> bool:
        return self.gpus_per_actor > 0


class RayInit(_Strict):
    """Arguments for ``ray.init`` when the job starts its own local cluster."""

    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a local cluster.")
    object_store_memory_gb: float | None = Field(None, gt=0)


class TrainResources(_Strict):
    """Ray Train workers for ``selfalign train`` (one DeepSpeed rank per worker)."""

    num_workers: int = Field(2, ge=1, description="Training workers (data-parallel ranks).")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per worker.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per worker (1 on a GPU cluster).")
    zero_stage: Literal[2, 3] = Field(
        2, description="DeepSpeed ZeRO stage (configs in selfalign/configs/)."
    )
    deepspeed_config: str | None = Field(
        None, description="Own DeepSpeed JSON instead of the packaged one for zero_stage."
    )
    omp_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads per worker (CPU only); default: cpus_per_worker rounded up.",
    )


class ServeResources(_Strict):
    """Ray Serve replicas of the scoring service (``selfalign serve``), each one vLLM engine.

    Serve's autoscaler keeps ``target_ongoing_requests`` in flight per replica between
    ``min_replicas`` and ``max_replicas``; ``max_ongoing_requests`` caps what one replica
    accepts, and must stay well above 1 so that the engine batches concurrent requests.
    """

    min_replicas: int = Field(1, ge=0, description="Autoscaling floor (0 = scale to zero).")
    max_replicas: int = Field(1, ge=1, description="Autoscaling ceiling.")
    target_ongoing_requests: float = Field(
        16, gt=0, description="Requests in flight per replica that the autoscaler aims for."
    )
    max_ongoing_requests: int = Field(
        64, ge=1, description="Most requests one replica handles at once (the engine batches them)."
    )
    cpus_per_replica: float = Field(1.0, ge=0, description="Ray CPUs reserved per replica.")
    gpus_per_replica: float = Field(0.0, ge=0, description="GPUs per replica (1 on a GPU node).")
    omp_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for the engine (CPU only); default: cpus_per_replica rounded up.",
    )

    @model_validator(mode="after")
    def _check(self) -> ServeResources:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) < min_replicas ({self.min_replicas})"
            )
        if self.target_ongoing_requests > self.max_ongoing_requests:
            raise ValueError(
                f"target_ongoing_requests ({self.target_ongoing_requests}) > "
                f"max_ongoing_requests ({self.max_ongoing_requests})"
            )
        return self


class ResourceProfile(_Strict):
    device: Literal["cpu", "cuda"] = "cpu"
    ray_init: RayInit = RayInit()
    stages: dict[str, StageResources] = Field(default_factory=dict)
    train: TrainResources | None = Field(None, description="Ray Train resources (selfalign train).")
    serve: ServeResources = Field(
        default_factory=ServeResources, description="Ray Serve replicas (selfalign serve)."
    )

    def stage(self, name: str) -> StageResources:
        if name in self.stages:
            return self.stages[name]
        if "default" in self.stages:
            return self.stages["default"]
        raise ConfigError(
            f"ray_config profile has no stage {name!r} and no 'default' stage; "
            f"known stages: {sorted(self.stages)}"
        )


class RayConfig(_Strict):
    profiles: dict[str, ResourceProfile]

    def profile(self, name: str) -> ResourceProfile:
        if name not in self.profiles:
            raise ConfigError(f"unknown resource profile {name!r}; known: {sorted(self.profiles)}")
        return self.profiles[name]


# --------------------------------------------------------------------------- engine


class VLLMSettings(_Strict):
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


class SamplingSettings(_Strict):
    """Default sampling; a row may override any field with its own ``sampling_params``."""

    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(128, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = Field(False, description="Always generate max_tokens (benchmarks).")


class GenerateConfig(_Strict):
    """``selfalign generate``: stream rows through the engine and write Parquet shards."""

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.models).")
    input: str | None = Field(
        None,
        description="JSONL/Parquet file, directory or glob; any pyarrow filesystem. Default: the embedded sample prompts.",
    )
    output: str = Field("runs/generate", description="Output directory (local or object store).")
    profile: str = Field("local", description="Resource profile in ray_config.yaml.")
    ray_config: str | None = Field(
        None, description="Path to ray_config.yaml (default: the repo's)."
    )
    ray_address: str | None = Field(None, description="Existing cluster to join; default: local.")
    operation: Literal["generate", "logprobs"] = "generate"
    logprobs_top_k: int = Field(20, ge=1, le=100)
    sampling: SamplingSettings = SamplingSettings()
    vllm: VLLMSettings = VLLMSettings()
    limit: int | None = Field(None, ge=1, description="Process only the first N rows.")


# --------------------------------------------------------------------------- loading


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. sampling.max_tokens=64)")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        value = yaml.safe_load(raw) if raw != "" else ""
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def build_config(
    cls: type[ConfigT],
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> ConfigT:
    """Build ``cls`` from an optional YAML file plus overrides; errors name the bad key."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    data = deep_merge(data, extra)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid {cls.__name__}{source}: {problems}") from None


def default_ray_config_path() -> Path:
    """``$SELFALIGN_RAY_CONFIG``, else ``ray_config.yaml`` in the working directory, else the repo's."""
    env = os.environ.get("SELFALIGN_RAY_CONFIG")
    if env:
        return Path(env)
    cwd = Path.cwd() / "ray_config.yaml"
    if cwd.exists():
        return cwd
    return Path(__file__).resolve().parent.parent / "ray_config.yaml"


def load_ray_config(path: str | os.PathLike | None = None) -> RayConfig:
    return build_config(RayConfig, path or default_ray_config_path())


def config_to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- stages


class StageJobConfig(_Strict):
    """Shared by the resumable engine stages (backtranslate, curate)."""

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.models).")
    input: str | None = Field(
        None, description="Input rows: JSONL/Parquet file, directory or glob."
    )
    output: str = Field(..., description="Stage output directory (local or object store).")
    id_column: str = Field("id", description="Unique, stable row id: the resume key.")
    profile: str = "local"
    ray_config: str | None = None
    ray_address: str | None = None
    vllm: VLLMSettings = VLLMSettings()
    limit: int | None = Field(None, ge=1, description="Process only the first N input rows.")


class BacktranslateConfig(StageJobConfig):
    """``selfalign backtranslate``: the backward model writes one instruction per segment."""

    output: str = "runs/backtranslate"
    text_column: str = Field("text", description="Segment text column of the input.")
    # The paper's self-augmentation sampling: temperature 0.7, top-p 0.9.
    sampling: SamplingSettings = SamplingSettings(temperature=0.7, top_p=0.9, max_tokens=96)


class SelectionSettings(_Strict):
    """Which scored pairs are kept. Thresholds combine; ``top_n`` applies after them."""

    min_score: int | None = Field(
        5, ge=1, le=5, description="Keep pairs whose (argmax) score >= this; the paper's A5 = 5."
    )
    min_expected: float | None = Field(
        None, ge=1, le=5, description="Keep pairs whose expected score >= this (e.g. 4.5)."
    )
    top_n: int | None = Field(None, ge=1, description="Then keep the N best by expected score.")


class CurateConfig(StageJobConfig):
    """``selfalign curate``: the current model rates each pair on the 5-point rubric."""

    output: str = "runs/curate"
    mode: Literal["logprobs", "generate"] = Field(
        "logprobs",
        description="logprobs: read P('1'..'5') after 'Score:' (never unparseable); "
        "generate: reasoning then 'Score: N', parsed.",
    )
    scorer_recipe: Literal["seed", "curated"] = Field(
        "seed",
        description="The recipe the scoring model was trained with (seed: M0 or a base "
        "instruct model; curated: M1+), so it is prompted as it was trained.",
    )
    logprobs_top_k: int = Field(20, ge=5, le=100)
    score_prefix: str | None = Field(
        None,
        description="logprobs mode: the reply pre-fill before the digit; None = detect from "
        "the scorer's tokenizer ('Score: ' when the space is its own token, else 'Score:').",
    )
    sampling: SamplingSettings = SamplingSettings(temperature=0.0, max_tokens=256)
    selection: SelectionSettings = SelectionSettings()


# --------------------------------------------------------------------------- serving


class ServeLimits(_Strict):
    """Bounds on what one request may carry (larger requests get HTTP 413)."""

    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_batch: int = Field(64, ge=1, description="Most pairs (or segments) in one request.")
    max_field_chars: int = Field(
        16_000, ge=16, description="Longest instruction, response or segment text (characters)."
    )
    max_id_chars: int = Field(256, ge=1, description="Longest client-supplied row id.")


class ServeConfig(_Strict):
    """``selfalign serve``: the current model as a Ray Serve scoring service.

    Scoring and backtranslation use the batch stages' own defaults (``CurateConfig`` and
    ``BacktranslateConfig``), so an endpoint score equals the ``selfalign curate`` score
    of the same pair.
    """

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.models).")
    backward_model: str | None = Field(
        None,
        description="Backward model for /v1/backtranslate: a second deployment; None = the "
        "current model's own engine.",
    )
    model_pointer: str | None = Field(
        None,
        description="Pointer file written by selfalign.serving.publish_model (local or object "
        "store); when it exists it names the current model, and replicas switch when it changes.",
    )
    backward_pointer: str | None = Field(
        None, description="Pointer file for the backward model (publish_model(role='backward'))."
    )
    poll_interval_s: float = Field(5.0, gt=0, description="How often replicas read the pointer.")
    drain_timeout_s: float = Field(
        300.0, gt=0, description="After a switch, how long the old engine may finish its requests."
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 for a cluster).")
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = Field("/", description="Serve route prefix of the application.")
    app_name: str = Field("selfalign", description="Serve application name.")
    token: str | None = Field(
        None,
        repr=False,
        description="Bearer token; default: $SELFALIGN_SERVE_TOKEN (prefer the env var: a "
        "token in a file or on the command line is easy to leak).",
    )
    open: bool = Field(False, description="Serve without authentication (explicit opt-in).")
    profile: str = "local"
    ray_config: str | None = None
    ray_address: str | None = None
    scorer_recipe: Literal["seed", "curated"] = CurateConfig.model_fields["scorer_recipe"].default
    logprobs_top_k: int = Field(CurateConfig.model_fields["logprobs_top_k"].default, ge=5, le=100)
    score_prefix: str | None = Field(
        None, description="As in CurateConfig: None = detect from the scorer's tokenizer."
    )
    scoring_sampling: SamplingSettings = CurateConfig.model_fields["sampling"].default
    backtranslate_sampling: SamplingSettings = BacktranslateConfig.model_fields["sampling"].default
    vllm: VLLMSettings = VLLMSettings()
    limits: ServeLimits = ServeLimits()

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        return self
