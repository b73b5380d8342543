"""Training config, resources, DeepSpeed configs, CLI wiring and output claiming (no Ray)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selfalign.core import claims
from selfalign.core.config import build_config
from selfalign.core.errors import ConfigError, OutputConflict
from selfalign.core.resources import TrainResources, load_ray_config
from selfalign.training.config import TrainConfig
from selfalign.training.driver import KIND, deepspeed_config, run_settings
from selfalign.training.worker import worker_env

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers():
    config = TrainConfig()
    assert (config.lr, config.lr_floor, config.weight_decay, config.dropout) == (
        1e-5,
        9e-6,
        0.1,
        0.1,
    )
    assert config.packing is True
    assert config.batch_size is None and config.max_steps is None  # from the data size
    assert config.resolved_dtype("cpu") == "float32"
    assert config.resolved_dtype("cuda") == "bfloat16"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lr": 1e-5, "lr_floor": 2e-5}, "lr_floor"),
        ({"max_steps": 5, "warmup_steps": 5}, "warmup_steps"),
        ({"chat_format": "dpo"}, "chat_format"),
        ({"recipe": "seed"}, "renamed 'chat_format'"),
        ({"learning_rate": 1e-5}, "learning_rate"),
        ({"lora": {"rank": 8}}, "lora.rank"),
    ],
)
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(TrainConfig, overrides=overrides)


@pytest.mark.parametrize("chat_format", ["backward", "seed", "curated"])
def test_train_yamls_validate(chat_format):
    config = build_config(
        TrainConfig, REPO / "jobs" / "configs" / f"train_{chat_format}.yaml", ["max_steps=7"]
    )
    assert config.chat_format == chat_format
    assert config.max_steps == 7


def test_ray_config_profiles_have_train_sections():
    ray_config = load_ray_config(REPO / "ray_config.yaml")
    local, gpu = ray_config.profile("local"), ray_config.profile("gpu")
    assert (
        local.device == "cpu" and local.train.num_workers == 2 and local.train.gpus_per_worker == 0
    )
    assert gpu.device == "cuda" and gpu.train.gpus_per_worker >= 1 and gpu.train.zero_stage == 3


@pytest.mark.parametrize("stage", [2, 3])
def test_packaged_deepspeed_configs_are_filled_in(stage):
    config = deepspeed_config(
        TrainResources(zero_stage=stage),
        gradient_accumulation_steps=4,
        max_grad_norm=1.0,
        bf16=False,
    )
    assert config["zero_optimization"]["stage"] == stage
    assert config["gradient_accumulation_steps"] == 4
    assert config["train_micro_batch_size_per_gpu"] == 1
    assert config["gradient_clipping"] == 1.0
    assert config["bf16"] == {"enabled": False}
    assert "auto" not in json.dumps(config)


def test_own_deepspeed_config_is_used_and_checked(tmp_path):
    own = tmp_path / "ds.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    with pytest.raises(ConfigError, match="stage"):
        deepspeed_config(
            TrainResources(deepspeed_config=str(own)),
            gradient_accumulation_steps=1,
            max_grad_norm=0,
            bf16=True,
        )


def test_cpu_workers_get_the_deepspeed_cpu_accelerator_and_op_cache():
    env = worker_env("cpu", TrainResources(cpus_per_worker=1, omp_threads=None))
    assert env["DS_ACCELERATOR"] == "cpu"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["TORCH_EXTENSIONS_DIR"]
    assert "DS_ACCELERATOR" not in worker_env("cuda", TrainResources(gpus_per_worker=1))


def test_an_output_holding_another_run_is_refused_unless_overwritten(tmp_path):
    output = str(tmp_path / "run")
    resources = TrainResources()
    config = TrainConfig(chat_format="seed", output=output)
    first = run_settings(config, resources, num_examples=70, batch_size=8, total_steps=500)
    assert claims.check_output(output, KIND, first) == "new"
    claims.begin(output, KIND, first)
    assert claims.check_output(output, KIND, first) == "resume"  # the same run: resumed
    # Failure handling and logging do not change what is trained.
    same = run_settings(config.model_copy(update={"max_failures": 9}), resources, 70, 8, 500)
    assert same == first
    # Neither does the data's size stay unchecked: it is part of what a checkpoint is for.
    assert run_settings(config, resources, 71, 8, 500) != first
    other = config.model_copy(update={"chat_format": "backward"})
    other_settings = run_settings(other, resources, 70, 8, 500)
    with pytest.raises(OutputConflict, match="chat_format"):
        claims.check_output(output, KIND, other_settings)
    assert claims.check_output(output, KIND, other_settings, overwrite=True) == "new"
    claims.begin(output, KIND, other_settings)
    manifest = json.loads((tmp_path / "run" / claims.MANIFEST_NAME).read_text())
    assert manifest["settings"]["chat_format"] == "backward"


def test_cli_has_the_train_command_and_builds_its_config(tmp_path):
    from selfalign.cli import build_parser
    from selfalign.cli.train import resolve_config

    args = build_parser().parse_args(
        [
            "train",
            "--chat-format",
            "backward",
            "--input",
            "x.jsonl",
            "--no-packing",
            "--max-steps",
            "3",
            "seed=5",
        ]
    )
    config = resolve_config(args)
    assert (config.chat_format, config.input, config.packing, config.max_steps, config.seed) == (
        "backward",
        "x.jsonl",
        False,
        3,
        5,
    )


def test_pure_modules_import_no_heavy_stack():
    code = (
        "import sys\n"
        "import selfalign.formats.conversations, selfalign.training.schedule, selfalign.training.packing\n"
        "import selfalign.formats.labels, selfalign.training.config, selfalign.cli.train\n"
        "import selfalign.training.driver, selfalign.training.loop, selfalign.training.worker\n"
        "heavy = [m for m in ('torch', 'ray', 'deepspeed', 'transformers', 'vllm', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == ""


def test_the_old_recipe_flag_still_selects_the_chat_format(capsys):
    from selfalign.cli import build_parser
    from selfalign.cli.train import resolve_config

    args = build_parser().parse_args(["train", "--recipe", "curated"])
    assert resolve_config(args).chat_format == "curated"
    assert "--chat-format" in capsys.readouterr().err
