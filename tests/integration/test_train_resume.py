"""A training worker is killed (SIGKILL, from outside) mid-run; the run resumes from its
last checkpoint and finishes with the right number of steps."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from selfalign.core.config import build_config
from selfalign.training.config import TrainConfig

from .test_train_deepspeed import local_profile, write_pairs

pytestmark = pytest.mark.integration

STEPS = 40
EVERY = 5


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def registered_checkpoint_step(run: Path) -> int | None:
    snapshot = run / "checkpoints" / "train" / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (FileNotFoundError, json.JSONDecodeError):  # not yet written, or mid-write
        return None
    return latest["metrics"]["step"] if latest else None


def test_killed_worker_resumes_from_checkpoint_and_finishes(ray_cluster, tiny_model_path, tmp_path):
    from selfalign.training.driver import train

    run = tmp_path / "run"
    config = build_config(
        TrainConfig,
        overrides={
            "chat_format": "seed",
            "model": tiny_model_path,
            "input": str(write_pairs(tmp_path / "pairs.jsonl", 40)),
            "output": str(run),
            "batch_size": 4,
            "max_steps": STEPS,
            "checkpoint_every": EVERY,
            "max_failures": 2,
            "export": False,
        },
    )
    outcome: dict = {}

    def run_training():
        try:
            outcome["summary"] = train(config, local_profile(zero_stage=2))
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    thread = threading.Thread(target=run_training, daemon=True)
    thread.start()

    # Wait until Ray Train has registered a checkpoint (files in storage are not enough:
    # a checkpoint whose upload is cut short is rightly ignored), then kill rank 1.
    deadline = time.monotonic() + 300
    while registered_checkpoint_step(run) is None:
        assert thread.is_alive(), f"training ended before the first checkpoint: {outcome}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    victim = json.loads((run / "workers" / "rank-1.json").read_text())["pid"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    thread.join(timeout=400)
    assert not thread.is_alive(), "training did not finish after the kill"
    assert "error" not in outcome, outcome.get("error")
    assert not pid_alive(victim)
    # The kill happened mid-run: training went on for a while after it.
    assert time.monotonic() - killed_at > 5

    summary = outcome["summary"]
    assert summary["final_metrics"]["step"] == STEPS
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    resumed = [r for r in rows if r.get("event") == "resumed"]
    assert len(resumed) == 1
    resumed_step = resumed[0]["step"]
    assert resumed_step % EVERY == 0 and EVERY <= resumed_step < STEPS
    # Every step trained exactly once in the final record: up to the checkpoint from the
    # first attempt, after it from the second.
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    assert rows.index(resumed[0]) == resumed_step + 1  # after 'started' and steps 1..N
    # A new worker process took rank 1.
    assert json.loads((run / "workers" / "rank-1.json").read_text())["pid"] != victim
