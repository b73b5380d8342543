"""``ray_config.yaml``: how the pipeline maps onto Ray resources, in named profiles.

Per profile: the device, how a local cluster is started, and per stage the pool of
vLLM engine actors (``StageResources``), the Ray Train workers (``TrainResources``) and
the Ray Serve replicas (``ServeResources``). Select a profile with ``--profile``.

Pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from selfalign.core.config import Strict, build_config
from selfalign.core.errors import ConfigError


class StageResources(Strict):
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


class RayInit(Strict):
    """Arguments for ``ray.init`` when the job starts its own local cluster."""

    num_cpus: int | None = Field(None, ge=1, description="Logical CPUs of a local cluster.")
    object_store_memory_gb: float | None = Field(None, gt=0)


class TrainResources(Strict):
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


class ServeResources(Strict):
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


class ResourceProfile(Strict):
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


class RayConfig(Strict):
    profiles: dict[str, ResourceProfile]

    def profile(self, name: str) -> ResourceProfile:
        if name not in self.profiles:
            raise ConfigError(f"unknown resource profile {name!r}; known: {sorted(self.profiles)}")
        return self.profiles[name]


def default_ray_config_path() -> Path:
    """``$SELFALIGN_RAY_CONFIG``, else ``ray_config.yaml`` in the working directory, else the repo's."""
    env = os.environ.get("SELFALIGN_RAY_CONFIG")
    if env:
        return Path(env)
    cwd = Path.cwd() / "ray_config.yaml"
    if cwd.exists():
        return cwd
    return Path(__file__).resolve().parents[2] / "ray_config.yaml"


def load_ray_config(path: str | os.PathLike | None = None) -> RayConfig:
    return build_config(RayConfig, path or default_ray_config_path())
