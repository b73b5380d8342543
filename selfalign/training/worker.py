"""What runs on every Ray Train worker: DeepSpeed set-up, resume, the step loop, export.

Each worker loads the model, wraps it with ``deepspeed.initialize`` (ZeRO-2 or ZeRO-3;
gloo + fp32 on CPU, NCCL + bf16 on GPU) and runs ``selfalign.training.loop.run_steps``.

* Checkpoints: every ``checkpoint_every`` steps each worker writes its DeepSpeed shard
  to a temporary directory and reports it; Ray Train merges the shards into one
  checkpoint in ``<output>/checkpoints/``. After a worker or run failure the new
  workers load the latest checkpoint and continue at the step after it; the step plan
  needs no other state.
* Metrics: rank 0 writes one JSON line per logged step to ``<output>/metrics.jsonl``.

deepspeed is imported only here, where ``DS_ACCELERATOR`` and ``TORCH_EXTENSIONS_DIR``
are set (``worker_env``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from selfalign.core import io
from selfalign.core.resources import TrainResources
from selfalign.training.config import TrainConfig
from selfalign.training.metrics import METRICS_NAME, MetricsLog

log = logging.getLogger(__name__)

WORKERS_DIR_NAME = "workers"
TRAINER_STATE_NAME = "trainer_state.json"


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
    deepspeed: dict  # the resolved DeepSpeed config


def torch_extensions_dir() -> str:
    """Where DeepSpeed keeps its JIT-built ops (the CPU comm op takes minutes to build)."""
    from selfalign.core.models import cache_dir

    return os.environ.get("TORCH_EXTENSIONS_DIR") or str(cache_dir() / "torch_extensions")


def worker_env(device: str, resources: TrainResources) -> dict[str, str]:
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
        threads = resources.omp_threads or max(1, math.ceil(resources.cpus_per_worker))
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def train_loop(loop_config: dict) -> None:
    """The Ray Train worker function (``TorchTrainer(train_loop, ...)``)."""
    import deepspeed
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from selfalign.training.loop import param_groups, run_steps
    from selfalign.training.model_io import export, load_model
    from selfalign.training.objectives import build_objective

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
    data = ray.get(job.data_ref)

    if job.device == "cuda":
        # DeepSpeed places the engine on LOCAL_RANK's device; make it the worker's GPU.
        torch.cuda.set_device(ray.train.torch.get_device())
    deepspeed.init_distributed(dist_backend="nccl" if job.device == "cuda" else "gloo")
    dtype = torch.bfloat16 if config.resolved_dtype(job.device) == "bfloat16" else torch.float32
    zero3 = job.resources.zero_stage == 3
    model, model_path, pad_id = load_model(
        config, zero3=zero3, ds_config=job.deepspeed, dtype=dtype
    )
    optimizer = torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=config.adam_betas
    )
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=job.deepspeed)

    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            engine.load_checkpoint(directory)
            with open(os.path.join(directory, TRAINER_STATE_NAME)) as handle:
                start_step = json.load(handle)["step"]
    metrics = MetricsLog(f"{job.output}/{METRICS_NAME}") if rank == 0 else None
    if metrics is not None:
        metrics.start(resumed_from=start_step if checkpoint is not None else None)
        log.info("rank 0: steps %d..%d of %d", start_step + 1, job.total_steps, job.total_steps)

    def after_step(record) -> None:
        done = record.step
        if metrics is not None and (done % config.log_every == 0 or done == job.total_steps):
            metrics.add(record.row())
            log.info(
                "step %d/%d loss %.4f lr %.3g grad_norm %s tok/s %.0f",
                done,
                job.total_steps,
                record.loss,
                record.lr,
                record.grad_norm,
                record.tokens_per_s,
            )
        # Every rank reports the same number of times (Ray Train requires it).
        if done % config.checkpoint_every == 0:
            if metrics is not None:
                metrics.flush()
            _save_checkpoint(engine, done, rank, {"step": done, "loss": record.loss})
        elif done == job.total_steps:
            ray.train.report({"step": done, "loss": record.loss})

    run_steps(
        engine,
        optimizer,
        data=data,
        objective=build_objective(config.objective, packing=config.packing, pad_id=pad_id),
        config=config,
        batch_size=job.batch_size,
        total_steps=job.total_steps,
        start_step=start_step,
        rank=rank,
        world=world,
        all_reduce=dist.all_reduce,
        on_step=after_step,
    )
    if config.export:
        export(engine.module, config, model_path, job.output, rank=rank, zero3=zero3, dtype=dtype)
        dist.barrier()
    if metrics is not None:
        metrics.add({"event": "finished", "step": job.total_steps})
        metrics.flush()


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

    info = {
        "rank": rank,
        "pid": os.getpid(),
        "node_ip": ray.util.get_node_ip_address(),
        "time": time.time(),
    }
    io.write_json(f"{output}/{WORKERS_DIR_NAME}/rank-{rank}.json", info)
