"""``train``: one fine-tuning run on Ray Train (``TorchTrainer``) + DeepSpeed ZeRO.

The driver reads and tokenises the rows once (``selfalign.training.data``; labels per
message, ``selfalign.formats.labels``), puts the token arrays in the object store and
starts N workers (``selfalign.training.worker``), which run the step loop
(``selfalign.training.loop``) with the configured objective.

Outputs: ``<output>/model`` (Hugging Face safetensors + tokenizer + chat template),
``metrics.jsonl``, ``checkpoints/`` (Ray Train), ``train-summary.json``, the resolved
config and the claim ``_manifest.json``. An output that holds this run's checkpoints is
resumed (Ray Train restores the run by name and storage); a completed one is skipped;
another run's is refused unless ``overwrite`` (``selfalign.core.claims``).

The ZeRO configs keep ``overlap_comm`` off: on CPU (gloo) there is no separate stream
to overlap with, and it only adds buffers.
"""

from __future__ import annotations

import json
import logging
import time
from importlib import resources
from typing import Any

from selfalign.core import claims, io
from selfalign.core.config import RESOLVED_CONFIG_NAME, config_to_yaml
from selfalign.core.embedded import seed_pairs_path
from selfalign.core.errors import ConfigError
from selfalign.core.resources import ResourceProfile, TrainResources
from selfalign.training.config import TrainConfig
from selfalign.training.metrics import METRICS_NAME, read_steps
from selfalign.training.model_io import MODEL_DIR_NAME
from selfalign.training.schedule import batch_size_for_data_size, steps_for_data_size

log = logging.getLogger(__name__)

SUMMARY_NAME = "train-summary.json"
CHECKPOINTS_DIR_NAME = "checkpoints"
RUN_NAME = "train"
KIND = "train"


def deepspeed_config(
    resources_: TrainResources,
    *,
    gradient_accumulation_steps: int,
    max_grad_norm: float,
    bf16: bool,
) -> dict[str, Any]:
    """The ZeRO config for ``resources_.zero_stage`` with its ``"auto"`` entries filled in.

    A micro-batch is one packed row (or one padded group): DeepSpeed's micro-batch size
    is 1 and the number of examples per step is decided by the step plan.
    """
    if resources_.deepspeed_config:
        path = resources_.deepspeed_config
    else:
        path = str(resources_path(f"deepspeed_zero{resources_.zero_stage}.json"))
    with open(path) as handle:
        config = json.load(handle)
    fills = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "gradient_clipping": max_grad_norm,
    }
    for key, value in fills.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    config.setdefault("bf16", {})
    if config["bf16"].get("enabled", "auto") == "auto":
        config["bf16"]["enabled"] = bf16
    config.pop("train_batch_size", None)  # derived by DeepSpeed from the two above
    stage = config.get("zero_optimization", {}).get("stage")
    if stage not in (2, 3):
        raise ConfigError(f"{path}: zero_optimization.stage must be 2 or 3, got {stage!r}")
    return config


def resources_path(name: str):
    return resources.files("selfalign") / "configs" / name


def run_settings(
    config: TrainConfig,
    resources_: TrainResources,
    num_examples: int,
    batch_size: int,
    total_steps: int,
) -> dict:
    """What a checkpoint is only valid for: resuming with other data or settings would
    silently mix two runs."""
    return {
        **claims.settings_of(config),
        "num_examples": num_examples,
        "batch_size": batch_size,
        "total_steps": total_steps,
        "num_workers": resources_.num_workers,
        "zero_stage": resources_.zero_stage,
    }


def train(config: TrainConfig, profile: ResourceProfile, *, overwrite: bool = False) -> dict:
    """Run one fine-tuning job to completion; returns its summary (also written to the output)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    from selfalign.core.cluster import ensure_ray
    from selfalign.core.models import resolve_model
    from selfalign.training.data import read_all_rows, tokenize_rows
    from selfalign.training.worker import TrainJob, train_loop, worker_env

    if profile.train is None:
        raise ConfigError(
            f"resource profile {config.profile!r} has no 'train' section in ray_config.yaml"
        )
    resources_ = profile.train
    if profile.device == "cuda" and resources_.gpus_per_worker <= 0:
        raise ConfigError("device is cuda but train.gpus_per_worker is 0")
    if (
        config.lora
        and config.lora.load_in_4bit
        and (profile.device != "cuda" or resources_.zero_stage == 3)
    ):
        raise ConfigError("lora.load_in_4bit (QLoRA) needs device cuda and zero_stage 2")

    output = io.absolute(config.output)
    ensure_ray(profile, config.ray_address)
    model = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(model.path)
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{config.model}: the tokenizer has no chat template to train with")

    rows = read_all_rows(config.input or seed_pairs_path(), limit=config.limit)
    data, stats = tokenize_rows(rows, config, tokenizer)
    batch_size = config.batch_size or batch_size_for_data_size(len(data))
    total_steps = config.max_steps or steps_for_data_size(len(data))
    micro_batches_per_step = resources_.num_workers * config.gradient_accumulation_steps
    if batch_size < micro_batches_per_step:
        raise ConfigError(
            f"batch_size {batch_size} cannot fill {resources_.num_workers} workers x "
            f"{config.gradient_accumulation_steps} accumulation steps; raise batch_size or lower them"
        )
    if config.warmup_steps >= total_steps:
        raise ConfigError(
            f"warmup_steps ({config.warmup_steps}) must be below the {total_steps} steps"
        )
    settings = run_settings(config, resources_, len(data), batch_size, total_steps)
    state = claims.check_output(output, KIND, settings, overwrite=overwrite)
    if state == "complete":
        log.info("%s: this training run is already complete, skipping", output)
        return io.read_json(f"{output}/{SUMMARY_NAME}") or {}
    if state == "resume":
        log.info("%s: resuming the run found there from its latest checkpoint", output)
    log.info(
        "train %s (%s): %d examples (%s), batch %d, %d steps, %d workers, ZeRO-%d, %s",
        config.chat_format,
        config.objective,
        len(data),
        stats,
        batch_size,
        total_steps,
        resources_.num_workers,
        resources_.zero_stage,
        "packing" if config.packing else "padding",
    )
    claims.begin(output, KIND, settings)
    io.write_text(f"{output}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    use_gpu = profile.device == "cuda"
    dtype = config.resolved_dtype(profile.device)
    job = TrainJob(
        config=config,
        resources=resources_,
        device=profile.device,
        data_ref=ray.put(data),
        num_examples=len(data),
        batch_size=batch_size,
        total_steps=total_steps,
        output=output,
        deepspeed=deepspeed_config(
            resources_,
            gradient_accumulation_steps=config.gradient_accumulation_steps,
            max_grad_norm=config.max_grad_norm,
            bf16=dtype == "bfloat16",
        ),
    )
    worker_resources = {"CPU": resources_.cpus_per_worker}
    if use_gpu:
        worker_resources["GPU"] = resources_.gpus_per_worker
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"job": job},
        scaling_config=ScalingConfig(
            num_workers=resources_.num_workers,
            use_gpu=use_gpu,
            resources_per_worker=worker_resources,
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=RUN_NAME,
            storage_path=f"{output}/{CHECKPOINTS_DIR_NAME}",
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            worker_runtime_env={"env_vars": worker_env(profile.device, resources_)},
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    elapsed = time.perf_counter() - started
    steps = read_steps(f"{output}/{METRICS_NAME}")
    seconds = sum(r.get("step_s", 0) for r in steps)
    summary = {
        "chat_format": config.chat_format,
        "objective": config.objective,
        "model": config.model,
        **stats,
        "batch_size": batch_size,
        "steps": total_steps,
        "num_workers": resources_.num_workers,
        "zero_stage": resources_.zero_stage,
        "packing": config.packing,
        "elapsed_s": round(elapsed, 2),
        # Real (unpadded) tokens per second of step time, over the logged steps.
        "tokens_per_s": round(sum(r.get("tokens", 0) for r in steps) / seconds, 2)
        if seconds
        else None,
        "final_metrics": steps[-1] if steps else {},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model_dir": f"{output}/{MODEL_DIR_NAME}" if config.export else None,
        "metrics_file": f"{output}/{METRICS_NAME}",
    }
    io.write_json(f"{output}/{SUMMARY_NAME}", summary)
    claims.complete(output, KIND, settings, **summary)
    return summary
