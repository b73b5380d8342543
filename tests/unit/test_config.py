from pathlib import Path

import pytest

from selfalign.core.config import build_config, config_to_yaml, parse_overrides
from selfalign.core.errors import ConfigError
from selfalign.core.resources import RayConfig, StageResources, load_ray_config
from selfalign.stages.generate.config import GenerateConfig

REPO = Path(__file__).resolve().parents[2]


def test_parse_overrides_types_and_nesting():
    tree = parse_overrides(
        ["sampling.max_tokens=64", "vllm.enable_prefix_caching=false", "model=x/y"]
    )
    assert tree == {
        "sampling": {"max_tokens": 64},
        "vllm": {"enable_prefix_caching": False},
        "model": "x/y",
    }


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_parse_overrides_rejects_malformed(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


def test_yaml_then_overrides_win(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("model: a/b\nsampling:\n  max_tokens: 10\n  temperature: 0.5\n")
    config = build_config(GenerateConfig, path, ["sampling.max_tokens=20"])
    assert config.model == "a/b"
    assert config.sampling.max_tokens == 20
    assert config.sampling.temperature == 0.5


def test_unknown_key_is_an_error_naming_the_key(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("sampling:\n  max_tokenz: 10\n")
    with pytest.raises(ConfigError, match=r"sampling\.max_tokenz"):
        build_config(GenerateConfig, path)


def test_bad_value_is_an_error():
    with pytest.raises(ConfigError, match="max_tokens"):
        build_config(GenerateConfig, None, ["sampling.max_tokens=0"])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_config(GenerateConfig, tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = build_config(GenerateConfig, None, ["sampling.max_tokens=7", "operation=logprobs"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config_to_yaml(config))
    assert build_config(GenerateConfig, path) == config


def test_repo_ray_config_profiles():
    ray_config = load_ray_config(REPO / "ray_config.yaml")
    local = ray_config.profile("local")
    assert local.device == "cpu"
    assert local.stage("generate").gpus_per_actor == 0
    # Stages without their own entry fall back to "default".
    assert local.stage("some-new-stage") == local.stage("default")
    gpu = ray_config.profile("gpu")
    assert gpu.device == "cuda"
    assert gpu.stage("generate").uses_gpu
    assert gpu.stage("generate").max_actors > gpu.stage("generate").min_actors
    with pytest.raises(ConfigError, match="unknown resource profile"):
        ray_config.profile("nope")


def test_stage_resources_validation():
    with pytest.raises(ValueError, match="max_actors"):
        StageResources(min_actors=3, max_actors=2)


def test_ray_config_rejects_unknown_stage_key(tmp_path):
    path = tmp_path / "ray.yaml"
    path.write_text("profiles:\n  local:\n    stages:\n      generate:\n        actors: 2\n")
    with pytest.raises(ConfigError, match="actors"):
        build_config(RayConfig, path)


def test_dtype_auto_is_float32_on_cpu():
    config = GenerateConfig()
    assert config.vllm.resolved_dtype("cpu") == "float32"
    assert config.vllm.resolved_dtype("cuda") == "bfloat16"
