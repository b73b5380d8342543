"""Supervised fine-tuning on Ray Train (``TorchTrainer``) + DeepSpeed ZeRO.

The driver reads and tokenises the rows once (labels per message, see
``selfalign.training.labels``), puts the token arrays in the object store and starts N
workers. Each worker loads the model, wraps it with ``deepspeed.initialize`` (ZeRO-2 or
ZeRO-3 from ``selfalign/configs/``; gloo + fp32 on CPU, NCCL + bf16 on GPU) and runs the
step plan of ``selfalign.training.packing``, which every worker computes identically.

* Checkpoints: every ``checkpoint_every`` steps each worker writes its DeepSpeed shard
  to a temporary directory and reports it; Ray Train merges the shards into one
  checkpoint in ``<output>/checkpoints/``. After a worker or run failure
  (``FailureConfig``) the new workers load the latest checkpoint and continue at the
  step after it; the step plan needs no other state.
* Export: the full weights are gathered on rank 0 (parameter by parameter, so ZeRO-3
  never materialises a second full copy on a GPU) and written with ``save_pretrained``
  as safetensors, with the tokenizer and its chat template: ``<output>/model``.
* Metrics: rank 0 writes one JSON line per logged step to ``<output>/metrics.jsonl``.

The ZeRO configs keep ``overlap_comm`` off: on CPU (gloo) there is no separate stream
to overlap with, and it only adds buffers.

Heavy imports (torch, deepspeed, transformers, ray) happen inside functions; deepspeed
only inside the workers, where ``DS_ACCELERATOR`` and ``TORCH_EXTENSIONS_DIR`` are set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import posixpath
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

from selfalign.config import (
    RESOLVED_CONFIG_NAME,
    ConfigError,
    ResourceProfile,
    TrainResources,
    config_to_yaml,
)
from selfalign.training.config import TrainConfig
from selfalign.training.packing import (
    IGNORE_INDEX,
    TokenizedDataset,
    collate_packed,
    collate_padded,
    computed_tokens,
    plan_step,
)
from selfalign.training.recipes import ConversationError, conversation_for
from selfalign.training.schedule import batch_size_for_data_size, lr_at, steps_for_data_size

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "train-summary.json"
MODEL_DIR_NAME = "model"
CHECKPOINTS_DIR_NAME = "checkpoints"
WORKERS_DIR_NAME = "workers"
TRAINER_STATE_NAME = "trainer_state.json"
FINGERPRINT_NAME = "run-fingerprint.json"
RUN_NAME = "train"
_METRICS_FLUSH_S = 5.0
# Model config fields that hold dropout probabilities across common architectures
# (Llama has only attention_dropout).
_DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def seed_pairs_path() -> str:
    """The embedded seed pairs used when no ``input`` is given."""
    return str(resources.files("selfalign") / "data" / "seed_pairs.jsonl")


def torch_extensions_dir() -> str:
    """Where DeepSpeed keeps its JIT-built ops (the CPU comm op takes minutes to build)."""
    from selfalign.models import cache_dir

    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(cache_dir() / "torch_extensions")


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainJob:
    """Everything a worker needs; one object across the runtime boundary."""

    config: TrainConfig
    resources: TrainResources
    device: str  # "cpu" | "cuda"
    data_ref: Any  # ray.ObjectRef of a TokenizedDataset
    num_examples: int
    batch_size: int
    total_steps: int
    output: str  # absolute local path or URI


def deepspeed_config(
    resources: TrainResources, *, gradient_accumulation_steps: int, max_grad_norm: float, bf16: bool
) -> dict[str, Any]:
    """The ZeRO config for ``resources.zero_stage`` with its ``"auto"`` entries filled in.

    A micro-batch is one packed row (or one padded group): DeepSpeed's micro-batch size
    is 1 and the number of examples per step is decided by the step plan.
    """
    if resources.deepspeed_config:
        path = resources.deepspeed_config
    else:
        path = str(resources_path(f"deepspeed_zero{resources.zero_stage}.json"))
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


def read_all_rows(uri: str, *, limit: int | None = None) -> list[dict]:
    """Every row of a JSONL/Parquet input (file, directory or glob, any filesystem).

    The training set is tokenised in full on the driver, so the rows are read directly
    rather than through a Ray Dataset; JSON lines are parsed with ``json`` so nested
    ``messages`` keep their exact shape.
    """
    import pyarrow.parquet as pq

    from selfalign.runtime.io import expand_input

    filesystem, files, fmt = expand_input(uri)
    rows: list[dict] = []
    for path in files:
        if fmt == "parquet":
            rows.extend(pq.read_table(path, filesystem=filesystem).to_pylist())
        else:
            with filesystem.open_input_stream(path, compression="detect") as stream:
                rows.extend(
                    json.loads(line) for line in stream.read().decode().splitlines() if line.strip()
                )
        if limit is not None and len(rows) >= limit:
            return rows[:limit]
    return rows


def tokenize_rows(
    rows: list[dict], config: TrainConfig, tokenizer
) -> tuple[TokenizedDataset, dict]:
    """Token ids + targets for every usable row; counts of what was dropped and why."""
    from selfalign.training.labels import tokenize_conversation

    examples, dropped_invalid, dropped_no_target, truncated = [], 0, 0, 0
    for row in rows:
        try:
            messages = conversation_for(row, config.recipe, source_tags=config.source_tags)
            full = tokenize_conversation(tokenizer, messages)
        except ConversationError as err:
            dropped_invalid += 1
            if dropped_invalid <= 3:
                log.warning("skipping row: %s", err)
            continue
        if len(full) > config.max_seq_len:
            truncated += 1
        ids, flags = full.input_ids[: config.max_seq_len], full.trainable[: config.max_seq_len]
        # The first token can never be a target (nothing precedes it).
        if not any(flags[1:]):
            dropped_no_target += 1
            continue
        examples.append((ids, flags))
    if not examples:
        raise ConfigError(
            "no usable training rows (all invalid or without an assistant reply within max_seq_len)"
        )
    stats = {
        "rows": len(rows),
        "examples": len(examples),
        "dropped_invalid": dropped_invalid,
        "dropped_no_target": dropped_no_target,
        "truncated": truncated,
    }
    return TokenizedDataset.from_examples(examples), stats


# --------------------------------------------------------------------------- driver


def train(config: TrainConfig, profile: ResourceProfile, *, overwrite: bool = False) -> dict:
    """Run one fine-tuning job to completion; returns its summary (also written to the output).

    An output that already holds this run's checkpoints is resumed (Ray Train restores
    the run by name and storage); one holding a different run is refused unless
    ``overwrite``, which clears it first.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    from selfalign.models import resolve_model
    from selfalign.runtime import io
    from selfalign.runtime.cluster import ensure_ray

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
    log.info(
        "train %s: %d examples (%s), batch %d, %d steps, %d workers, ZeRO-%d, %s",
        config.recipe,
        len(data),
        stats,
        batch_size,
        total_steps,
        resources_.num_workers,
        resources_.zero_stage,
        "packing" if config.packing else "padding",
    )
    _claim_output(
        output, run_fingerprint(config, resources_, len(data), batch_size, total_steps), overwrite
    )
    io.write_text(f"{output}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    job = TrainJob(
        config=config,
        resources=resources_,
        device=profile.device,
        data_ref=ray.put(data),
        num_examples=len(data),
        batch_size=batch_size,
        total_steps=total_steps,
        output=output,
    )
    use_gpu = profile.device == "cuda"
    worker_resources = {"CPU": resources_.cpus_per_worker}
    if use_gpu:
        worker_resources["GPU"] = resources_.gpus_per_worker
    trainer = TorchTrainer(
        _train_loop,
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
    summary = {
        "recipe": config.recipe,
        "model": config.model,
        **stats,
        "batch_size": batch_size,
        "steps": total_steps,
        "num_workers": resources_.num_workers,
        "zero_stage": resources_.zero_stage,
        "packing": config.packing,
        "elapsed_s": round(elapsed, 2),
        "final_metrics": _last_step_row(f"{output}/{METRICS_NAME}"),
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "model_dir": f"{output}/{MODEL_DIR_NAME}" if config.export else None,
        "metrics_file": f"{output}/{METRICS_NAME}",
    }
    io.write_json(f"{output}/{SUMMARY_NAME}", summary)
    return summary


# Settings that do not change what is trained: a run may be resumed with others.
_RESUMABLE_FIELDS = frozenset(
    {
        "output",
        "ray_address",
        "profile",
        "ray_config",
        "max_failures",
        "keep_checkpoints",
        "log_every",
        "export",
    }
)


def run_fingerprint(
    config: TrainConfig,
    resources_: TrainResources,
    num_examples: int,
    batch_size: int,
    total_steps: int,
) -> dict:
    """What a checkpoint is only valid for: resuming with other data or settings would
    silently mix two runs."""
    settings = {
        k: v for k, v in config.model_dump(mode="json").items() if k not in _RESUMABLE_FIELDS
    }
    return {
        **settings,
        "num_examples": num_examples,
        "batch_size": batch_size,
        "total_steps": total_steps,
        "num_workers": resources_.num_workers,
        "zero_stage": resources_.zero_stage,
    }


def _claim_output(output: str, fingerprint: dict, overwrite: bool) -> None:
    import pyarrow.fs as pafs

    from selfalign.runtime import io

    filesystem, path = io.filesystem_for(output)
    if overwrite:
        io.clear_output(output)
    marker = f"{path}/{FINGERPRINT_NAME}"
    if filesystem.get_file_info(marker).type == pafs.FileType.File:
        with filesystem.open_input_stream(marker) as stream:
            previous = json.loads(stream.read().decode())
        if previous != fingerprint:
            changed = sorted(
                k
                for k in fingerprint.keys() | previous.keys()
                if fingerprint.get(k) != previous.get(k)
            )
            raise ConfigError(
                f"{output} holds another training run (differs in: {', '.join(changed)}); "
                "choose another --output or pass --overwrite to start over"
            )
        log.info("%s: resuming the run found there from its latest checkpoint", output)
        return
    if filesystem.get_file_info(f"{path}/{CHECKPOINTS_DIR_NAME}").type != pafs.FileType.NotFound:
        raise ConfigError(
            f"{output} holds checkpoints of an unknown run; pass --overwrite or choose another --output"
        )
    io.write_json(f"{output}/{FINGERPRINT_NAME}", fingerprint)


def _last_step_row(uri: str) -> dict:
    """The last step's metrics row (Ray's result only holds checkpointed steps' metrics)."""
    from selfalign.runtime.io import filesystem_for

    filesystem, path = filesystem_for(uri)
    with filesystem.open_input_stream(path) as stream:
        rows = [json.loads(line) for line in stream.read().decode().splitlines() if line.strip()]
    steps = [row for row in rows if "loss" in row]
    return steps[-1] if steps else {}


def worker_env(device: str, resources_: TrainResources) -> dict[str, str]:
    env = {
        "TORCH_EXTENSIONS_DIR": torch_extensions_dir(),
        "TOKENIZERS_PARALLELISM": "false",
        # Tests and air-gapped clusters must not reach a hub from a worker either.
        **{
            k: os.environ[k]
            for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "SELFALIGN_CACHE")
            if k in os.environ
        },
    }
    if device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
        threads = resources_.omp_threads or max(1, math.ceil(resources_.cpus_per_worker))
        env["OMP_NUM_THREADS"] = str(threads)
    return env


# --------------------------------------------------------------------------- worker


def _train_loop(loop_config: dict) -> None:
    """Runs on every Ray Train worker."""
    import deepspeed
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    job: TrainJob = loop_config["job"]
    config = job.config
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if world != job.resources.num_workers:
        raise RuntimeError(f"expected {job.resources.num_workers} workers, got {world}")
    _record_worker(job.output, rank)
    torch.manual_seed(config.seed)
    data: TokenizedDataset = ray.get(job.data_ref)
    lengths = [int(n) for n in data.lengths]
    targets_per_example = [int((data.targets(i) != IGNORE_INDEX).sum()) for i in range(len(data))]

    if job.device == "cuda":
        # DeepSpeed places the engine on LOCAL_RANK's device; make it the worker's GPU.
        torch.cuda.set_device(ray.train.torch.get_device())
    deepspeed.init_distributed(dist_backend="nccl" if job.device == "cuda" else "gloo")
    dtype = torch.bfloat16 if config.resolved_dtype(job.device) == "bfloat16" else torch.float32
    ds_config = deepspeed_config(
        job.resources,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        bf16=dtype == torch.bfloat16,
    )
    model, model_path, pad_id = _load_model(job, ds_config, dtype)
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.lr, betas=config.adam_betas
    )
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    device = engine.device

    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(directory)
            with open(os.path.join(directory, TRAINER_STATE_NAME)) as handle:
                start_step = json.load(handle)["step"]
    metrics = _MetricsLog(f"{job.output}/{METRICS_NAME}") if rank == 0 else None
    if metrics is not None:
        metrics.start(resumed_from=start_step if checkpoint is not None else None)
        log.info("rank 0: steps %d..%d of %d", start_step + 1, job.total_steps, job.total_steps)

    engine.train()
    for step in range(start_step, job.total_steps):
        lr = lr_at(
            step,
            total_steps=job.total_steps,
            peak=config.lr,
            floor=config.lr_floor,
            warmup_steps=config.warmup_steps,
        )
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        plan = plan_step(
            lengths,
            step=step,
            batch_size=job.batch_size,
            num_ranks=world,
            micro_batches=config.gradient_accumulation_steps,
            seed=config.seed,
            packing=config.packing,
        )
        all_groups = [g for rank_groups in plan for g in rank_groups]
        step_targets = sum(targets_per_example[i] for g in all_groups for i in g)
        # DeepSpeed divides by the accumulation steps and averages over ranks; this scale
        # turns the sum of per-token losses into the mean over every target of the step.
        scale = world * config.gradient_accumulation_steps / step_targets
        started = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64)
        for group in plan[rank]:
            if config.packing:
                batch = collate_packed(data, group)
            else:
                batch = collate_padded(data, group, pad_id)
            summed = _summed_loss(engine, {k: v.to(device) for k, v in batch.items()})
            engine.backward(summed * scale)
            engine.step()
            loss_sum += summed.detach().double().cpu()
        dist.all_reduce(loss_sum)  # one tiny collective: the step's loss on every rank
        elapsed = time.perf_counter() - started
        loss = loss_sum.item() / step_targets
        done = step + 1
        if metrics is not None and (done % config.log_every == 0 or done == job.total_steps):
            real_tokens = sum(lengths[i] for g in all_groups for i in g)
            row = {
                "step": done,
                "loss": round(loss, 6),
                "lr": lr,
                "grad_norm": _grad_norm(engine),
                "tokens_per_s": round(real_tokens / elapsed, 2),
                "computed_tokens": sum(
                    computed_tokens(lengths, g, config.packing) for g in all_groups
                ),
                "tokens": real_tokens,
                "targets": step_targets,
                "step_s": round(elapsed, 4),
                "epoch": round(done * job.batch_size / job.num_examples, 4),
            }
            metrics.add(row)
            log.info(
                "step %d/%d loss %.4f lr %.3g grad_norm %s tok/s %.0f",
                done,
                job.total_steps,
                loss,
                lr,
                row["grad_norm"],
                row["tokens_per_s"],
            )
        if done % config.checkpoint_every == 0:
            if metrics is not None:
                metrics.flush()
            _save_checkpoint(engine, done, rank, {"step": done, "loss": loss})
        elif done == job.total_steps:
            ray.train.report({"step": done, "loss": loss})

    if config.export:
        _export(engine, job, model_path, rank, dtype)
    if metrics is not None:
        metrics.add({"event": "finished", "step": job.total_steps})
        metrics.flush()


def _load_model(job: TrainJob, ds_config: dict, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from selfalign.models import resolve_model

    config = job.config
    model_path = resolve_model(config.model).path
    model_config = AutoConfig.from_pretrained(model_path)
    # Modules copy dropout probabilities from the config when they are built: set them
    # before loading (the export is written from the unmodified config).
    for name in _DROPOUT_FIELDS:
        if isinstance(getattr(model_config, name, None), float | int):
            setattr(model_config, name, config.dropout)
    kwargs: dict[str, Any] = {"config": model_config, "dtype": dtype, "attn_implementation": "sdpa"}
    keep_alive = None
    if job.resources.zero_stage == 3 and not config.lora:
        # Lets from_pretrained build the model already partitioned (deepspeed.zero.Init),
        # so no worker ever holds the full weights: what makes ZeRO-3 fit large models.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must outlive from_pretrained)
    if config.lora and config.lora.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    del keep_alive
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora:
        model = _wrap_lora(model, config)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return model, model_path, pad_id


def _lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def _wrap_lora(model, config: TrainConfig):
    try:
        from peft import get_peft_model, prepare_model_for_kbit_training
    except ImportError:
        raise ConfigError("lora needs peft: pip install 'selfalign[lora]'") from None
    if config.lora.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return get_peft_model(model, _lora_config(config))


def _param_groups(model, weight_decay: float) -> list[dict]:
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


def _summed_loss(engine, batch: dict):
    """Sum of token cross-entropies over the batch's targets.

    Logits are computed only at positions that have a target (``logits_to_keep``): the
    vocabulary projection is a large share of a small model's cost and prompt tokens
    need none.
    """
    import torch
    import torch.nn.functional as F

    targets = batch.pop("targets")
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    output = engine(**batch, logits_to_keep=keep, use_cache=False)
    logits = output.logits.float()
    kept = targets[:, keep]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        kept.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    ).to(torch.float32)


def _grad_norm(engine) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    value = float(norm)
    return round(value, 6) if math.isfinite(value) else value


def _save_checkpoint(engine, step: int, rank: int, metrics: dict) -> None:
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory(prefix="selfalign-ckpt-") as directory:
        # Every rank writes its own shard files; Ray Train merges the directories.
        engine.save_checkpoint(directory, tag=f"step{step:08d}")
        if rank == 0:
            with open(os.path.join(directory, TRAINER_STATE_NAME), "w") as handle:
                json.dump({"step": step}, handle)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(directory))


def _record_worker(output: str, rank: int) -> None:
    """``workers/rank-N.json`` (pid, node): which process is which rank in this attempt."""
    import ray

    from selfalign.runtime import io

    info = {
        "rank": rank,
        "pid": os.getpid(),
        "node_ip": ray.util.get_node_ip_address(),
        "time": time.time(),
    }
    io.write_json(f"{output}/{WORKERS_DIR_NAME}/rank-{rank}.json", info)


# --------------------------------------------------------------------------- export


def _export(engine, job: TrainJob, model_path: str, rank: int, dtype) -> None:
    import torch.distributed as dist

    state = _gather_full_state(engine.module, zero3=job.resources.zero_stage == 3, rank=rank)
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="selfalign-export-") as directory:
            _write_hf_model(state, job.config, model_path, directory, dtype)
            _publish(directory, f"{job.output}/{MODEL_DIR_NAME}")
        log.info("exported %s/%s", job.output, MODEL_DIR_NAME)
    dist.barrier()


def _gather_full_state(module, *, zero3: bool, rank: int) -> dict:
    """Full tensors on rank 0's CPU. ZeRO-3 gathers one parameter at a time (collective:
    every rank walks the same parameters in the same order)."""
    import deepspeed

    state = {}
    for name, param in module.named_parameters():
        if zero3:
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if rank == 0:
                    state[name] = param.detach().to("cpu", copy=True)
        elif rank == 0:
            state[name] = param.detach().to("cpu", copy=True)
    if rank == 0:
        persistent = set(module.state_dict().keys())
        for name, buffer in module.named_buffers():
            if name in persistent:
                state[name] = buffer.detach().to("cpu", copy=True)
    return state


def _write_hf_model(
    state: dict, config: TrainConfig, model_path: str, directory: str, dtype
) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if config.lora:
        from peft import get_peft_model

        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        peft_model = get_peft_model(base, _lora_config(config))
        _check_load(peft_model.load_state_dict(state, strict=False), peft_model)
        model = peft_model.merge_and_unload()
    else:
        # Built on the meta device and filled with the gathered tensors: no second
        # random initialisation of a large model. The base config (not the training one,
        # with its dropout) is what is exported.
        model_config = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
        _check_load(model.load_state_dict(state, strict=False, assign=True), model)
        model.tie_weights()
    model.config.use_cache = True
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(directory)
    with contextlib.suppress(OSError):  # a base model without a generation config
        GenerationConfig.from_pretrained(model_path).save_pretrained(directory)


def _check_load(result, model) -> None:
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied and not k.endswith("lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"export: state mismatch, missing={missing[:5]} unexpected={result.unexpected_keys[:5]}"
        )


def _publish(local_dir: str, uri: str) -> None:
    """Copy a finished local directory to the output (local path or object store)."""
    import pyarrow.fs as pafs

    from selfalign.runtime.io import filesystem_for

    filesystem, path = filesystem_for(uri)
    if isinstance(filesystem, pafs.LocalFileSystem):
        staging = path + ".tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(local_dir, staging)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(staging, path)
        return
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, destination_filesystem=filesystem)


# --------------------------------------------------------------------------- metrics


class _MetricsLog:
    """``metrics.jsonl`` written by rank 0. Rewritten whole (small; works on object stores),
    at most every few seconds and at every checkpoint, so a crash loses nothing that the
    resumed run will not write again."""

    def __init__(self, uri: str):
        from selfalign.runtime.io import filesystem_for

        self.filesystem, self.path = filesystem_for(uri)
        self.rows: list[dict] = []
        self._last_flush = 0.0

    def start(self, resumed_from: int | None) -> None:
        import pyarrow.fs as pafs

        if resumed_from is None:
            self.rows = [{"event": "started", "step": 0, "time": time.time()}]
        else:
            if self.filesystem.get_file_info(self.path).type == pafs.FileType.File:
                with self.filesystem.open_input_stream(self.path) as stream:
                    lines = stream.read().decode().splitlines()
                # Steps after the checkpoint are about to be trained again.
                self.rows = [
                    r
                    for r in map(json.loads, filter(None, lines))
                    if r.get("step", 0) <= resumed_from
                ]
            self.rows.append({"event": "resumed", "step": resumed_from, "time": time.time()})
        self.flush()

    def add(self, row: dict) -> None:
        self.rows.append({**row, "time": round(time.time(), 3)})
        if time.time() - self._last_flush >= _METRICS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self.filesystem.create_dir(posixpath.dirname(self.path), recursive=True)
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(text.encode())
        self._last_flush = time.time()
