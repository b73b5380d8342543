"""Real training: 2 CPU workers, Ray Train + DeepSpeed ZeRO-3, export, then vLLM loads it.

The first run in a fresh cache JIT-builds DeepSpeed's CPU comm op (~1-3 minutes); it is
kept under ~/.cache/selfalign/torch_extensions for later runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from selfalign.core.config import build_config
from selfalign.core.resources import StageResources, load_ray_config
from selfalign.engine.config import SamplingSettings, VLLMSettings
from selfalign.training.config import TrainConfig
from selfalign.training.schedule import lr_at

pytestmark = pytest.mark.integration

STEPS = 12


def write_pairs(path: Path, count: int, seed: int = 0) -> Path:
    import random

    rng = random.Random(seed)
    words = [
        "river",
        "stone",
        "bread",
        "light",
        "music",
        "city",
        "water",
        "number",
        "garden",
        "poem",
        "engine",
        "winter",
    ]
    with path.open("w") as handle:
        for i in range(count):
            row = {
                "id": f"pair-{i}",
                "instruction": "Tell me about "
                + " ".join(rng.choices(words, k=rng.randint(3, 12)))
                + "?",
                "response": " ".join(rng.choices(words, k=rng.randint(8, 60))) + ".",
                "source": "seed" if i % 2 else "augmented",
            }
            handle.write(json.dumps(row) + "\n")
    return path


def local_profile(zero_stage: int):
    profile = load_ray_config().profile("local")
    return profile.model_copy(
        update={"train": profile.train.model_copy(update={"zero_stage": zero_stage})}
    )


@pytest.fixture(scope="module")
def trained(ray_cluster, tiny_model_path, tmp_path_factory):
    from selfalign.training.driver import train

    root = tmp_path_factory.mktemp("train-zero3")
    data = write_pairs(root / "pairs.jsonl", 8)
    # One fixed batch: 8 examples, batch_size 8, so every step sees the same examples.
    config = build_config(
        TrainConfig,
        overrides={
            "chat_format": "curated",
            "model": tiny_model_path,
            "input": str(data),
            "output": str(root / "run"),
            "batch_size": 8,
            "max_steps": STEPS,
            "lr": 1e-3,
            "lr_floor": 5e-4,
            "dropout": 0.0,
            "checkpoint_every": 100,
        },
    )
    summary = train(config, local_profile(zero_stage=3))
    rows = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    return {
        "config": config,
        "summary": summary,
        "root": root,
        "steps": [r for r in rows if "loss" in r],
    }


def test_loss_goes_down_on_a_fixed_batch(trained):
    losses = [row["loss"] for row in trained["steps"]]
    assert [row["step"] for row in trained["steps"]] == list(range(1, STEPS + 1))
    # A random model starts near ln(vocab) ~ 10.8; 12 steps at lr 1e-3 must bring it down.
    assert losses[0] > 9.5
    assert losses[-1] < losses[0] - 1.0
    assert all(later < losses[0] for later in losses[1:])


def test_metrics_rows_carry_schedule_throughput_and_grad_norm(trained):
    config = trained["config"]
    for row in trained["steps"]:
        expected = lr_at(row["step"] - 1, total_steps=STEPS, peak=config.lr, floor=config.lr_floor)
        assert row["lr"] == pytest.approx(expected)
        assert row["tokens_per_s"] > 0
        assert math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
        assert row["tokens"] == row["computed_tokens"]  # packing: no padding computed
    assert trained["steps"][-1]["lr"] == pytest.approx(5e-4)
    assert trained["summary"]["zero_stage"] == 3
    assert trained["summary"]["final_metrics"]["step"] == STEPS


def test_export_is_a_plain_hf_directory_with_the_trained_weights(trained, tiny_model_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfalign.training.batches import collate_packed
    from selfalign.training.data import read_all_rows, tokenize_rows

    model_dir = trained["root"] / "run" / "model"
    assert (model_dir / "model.safetensors").is_file()
    assert (model_dir / "config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template

    # The exported weights are the trained ones: lower loss on the training batch than the base.
    rows = read_all_rows(trained["config"].input)
    data, _ = tokenize_rows(rows, trained["config"], tokenizer)

    def mean_loss(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        batch = collate_packed(data, list(range(len(data))))
        targets = batch.pop("targets")
        with torch.no_grad():
            logits = model(**batch).logits
        return torch.nn.functional.cross_entropy(logits[0], targets[0], ignore_index=-100).item()

    exported, base = mean_loss(model_dir), mean_loss(tiny_model_path)
    assert exported < base - 1.0
    assert exported == pytest.approx(trained["steps"][-1]["loss"], abs=0.5)


def test_exported_model_loads_in_vllm_and_generates(trained):
    from selfalign.engine.processor import EngineSpec, run_engine
    from selfalign.formats.conversations import prompt_messages

    model_dir = str(trained["root"] / "run" / "model")
    rows = [
        {"id": i, "messages": prompt_messages({"instruction": q, "source": "seed"}, "curated")}
        for i, q in enumerate(["Tell me about rivers?", "Tell me about bread?"])
    ]
    spec = EngineSpec(
        model_path=model_dir,
        resources=StageResources(
            cpus_per_actor=1, omp_threads=2, batch_size=4, max_concurrent_batches=1
        ),
        vllm=VLLMSettings(
            dtype="float32",
            enforce_eager=True,
            max_model_len=512,
            cpu_kv_cache_gib=1,
            max_num_seqs=8,
        ),
        sampling=SamplingSettings(max_tokens=8, temperature=0.0),
    )
    import ray

    out = run_engine(ray.data.from_items(rows), spec).take_all()
    assert len(out) == 2
    for row in out:
        assert row["error"] is None
        assert row["num_generated_tokens"] >= 1
        assert isinstance(row["generated_text"], str)
