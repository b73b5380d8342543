"""LoRA (peft) on 2 CPU workers with DeepSpeed: only adapters train, the export is merged."""

from __future__ import annotations

import pytest

from selfalign.core.config import build_config
from selfalign.training.config import TrainConfig

from .test_train_deepspeed import local_profile, write_pairs

pytestmark = pytest.mark.integration
peft = pytest.importorskip("peft")


def test_lora_run_exports_merged_weights(ray_cluster, tiny_model_path, tmp_path):
    from safetensors.torch import load_file

    from selfalign.training.driver import train

    run = tmp_path / "run"
    config = build_config(
        TrainConfig,
        overrides={
            "chat_format": "backward",
            "model": tiny_model_path,
            "input": str(write_pairs(tmp_path / "pairs.jsonl", 8)),
            "output": str(run),
            "batch_size": 4,
            "max_steps": 3,
            "lr": 1e-2,
            "lr_floor": 1e-2,
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        },
    )
    summary = train(config, local_profile(zero_stage=2))
    assert summary["final_metrics"]["step"] == 3

    model_dir = run / "model"
    files = {p.name for p in model_dir.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    merged = load_file(model_dir / "model.safetensors")
    base = load_file(f"{tiny_model_path}/model.safetensors")
    assert sorted(merged) == sorted(base)  # plain model keys: no lora_A/lora_B left
    changed = {k for k in base if not (merged[k] == base[k]).all()}
    # Exactly the adapted projections moved; everything else is the frozen base.
    assert changed == {k for k in base if k.endswith(("q_proj.weight", "v_proj.weight"))}
