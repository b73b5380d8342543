"""The Humback loop's plan: order, wiring, validation and fingerprint propagation."""

from __future__ import annotations

import pytest

from selfalign.core.config import build_config
from selfalign.core.errors import ConfigError
from selfalign.recipes.humback.config import HumbackConfig
from selfalign.recipes.humback.plan import eval_format, plan
from selfalign.stages.mix import random_sample_ids
from selfalign.stages.split import heldout_ids


def _plan(**values):
    return {s.name: s for s in plan(build_config(HumbackConfig, None, values))}


def test_two_iterations_give_the_papers_models_in_dependency_order():
    steps = plan(HumbackConfig(run_dir="/r"))
    names = [s.name for s in steps]
    for model in ("backward", "m0", "m1", "m2", "m1_random"):
        assert model in names
    assert "m3" not in names
    seen: set[str] = set()
    for step in steps:
        assert set(step.needs) <= seen, f"{step.name} runs before {set(step.needs) - seen}"
        seen.add(step.name)
    assert len(names) == len(set(names))
    # Every forward model is evaluated right after it is trained.
    for model in ("m0", "m1", "m2", "m1_random"):
        assert names.index(f"eval_{model}") > names.index(model)


def test_wiring_models_data_and_recipes():
    steps = _plan(run_dir="/r")
    assert steps["backward"].config.chat_format == "backward"
    assert steps["backward"].config.input == "/r/seed_split/train"
    assert steps["augment"].config.model == "/r/backward/model"
    assert steps["augment"].config.input == "/r/corpus/segments"
    assert steps["m0"].config.chat_format == "seed"
    assert steps["m0"].config.input == "/r/seed_split/train"
    # M0 scores A(1) prompted as a seed-recipe model; M1 as a source-tagged one.
    assert steps["curate_1"].config.model == "/r/m0/model"
    assert steps["curate_1"].config.scorer_format == "seed"
    assert steps["curate_2"].config.model == "/r/m1/model"
    assert steps["curate_2"].config.scorer_format == "curated"
    # Every model is fine-tuned from the base model, as in the paper.
    for name in ("backward", "m0", "m1", "m2", "m1_random"):
        assert steps[name].config.model == "embedded:smollm2-135m-instruct"
    assert steps["m1"].config.input == "/r/mix_1/data"
    seed_part, augmented = steps["mix_1"].config.parts
    assert (seed_part.input, seed_part.source) == ("/r/seed_split/train", "seed")
    assert (augmented.input, augmented.source) == ("/r/curate_1/selected", "augmented")
    # The ablation draws from every scored pair, as many as A(1) holds.
    random_part = steps["mix_1_random"].config.parts[1]
    assert random_part.input == "/r/curate_1/data"
    assert random_part.sample.size_of == "/r/curate_1/selected"
    assert steps["eval_base"].config.model == "embedded:smollm2-135m-instruct"
    assert steps["eval_m2"].config.model == "/r/m2/model"
    assert steps["eval_m2"].config.heldout == "/r/seed_split/heldout"
    assert steps["eval_m2"].location == "/r/eval/m2.json"
    # What each step publishes to a service following the run: never the ablation's model.
    assert steps["backward"].publishes.role == "backward"
    assert steps["m0"].publishes.scorer_format == "seed"
    assert steps["m2"].publishes.scorer_format == "curated"
    assert steps["m1_random"].publishes is None
    # Needs are derived from the inputs, not declared.
    assert set(steps["augment"].needs) == {"ingest_corpus", "backward"}
    assert set(steps["mix_1_random"].needs) == {"split", "curate_1"}


def test_iterations_ablation_and_base_switches():
    steps = _plan(run_dir="/r", iterations=3, ablation=False, evaluation={"base": False})
    assert {"m3", "curate_3", "eval_m3"} <= set(steps)
    assert not {"m1_random", "mix_1_random", "eval_m1_random", "eval_base"} & set(steps)


def test_train_sections_merge_per_model():
    steps = _plan(
        run_dir="/r",
        train={"common": {"max_steps": 7, "lr": 2e-5}, "curated": {"max_steps": 11}},
    )
    assert steps["m0"].config.max_steps == 7
    assert steps["backward"].config.max_steps == 7
    assert steps["m1"].config.max_steps == 11 and steps["m1"].config.lr == 2e-5
    assert steps["m1_random"].config.max_steps == 11


@pytest.mark.parametrize(
    "values",
    [
        {"backtranslate": {"model": "x"}},
        {"curate": {"scorer_format": "seed"}},
        {"train": {"seed": {"input": "x"}}},
        {"corpus": {"output": "x"}},
    ],
)
def test_planned_keys_cannot_be_set_in_sections(values):
    with pytest.raises(ConfigError, match="cannot be set here"):
        plan(build_config(HumbackConfig, None, values))


def test_bad_stage_settings_fail_at_plan_time():
    with pytest.raises(ConfigError, match="curate"):
        _plan(curate={"mode": "telepathy"})
    with pytest.raises(ConfigError, match="m0"):
        _plan(train={"seed": {"lr": 1e-5, "lr_floor": 1e-4}})


def test_a_changed_setting_redoes_its_step_and_everything_downstream_only():
    before = _plan(run_dir="/r")
    after = _plan(run_dir="/r", curate={"selection": {"top_n": 5}})
    changed = {n for n in before if before[n].fingerprint != after[n].fingerprint}
    assert changed == {
        "curate_1", "mix_1", "m1", "eval_m1", "mix_1_random", "m1_random", "eval_m1_random",
        "curate_2", "mix_2", "m2", "eval_m2",
    }  # fmt: skip
    # Where it runs is not what it computes: a profile change redoes nothing.
    moved = _plan(run_dir="/r", profile="gpu", ray_address="ray://head:10001")
    assert all(moved[n].fingerprint == before[n].fingerprint for n in before)


def test_heldout_ids_are_stable_order_free_and_sized():
    ids = [f"id{i}" for i in range(50)]
    held = heldout_ids(ids, 7, seed=0)
    assert len(held) == 7 and held <= set(ids)
    assert held == heldout_ids(list(reversed(ids)), 7, seed=0)
    assert held != heldout_ids(ids, 7, seed=1)


def test_random_sample_is_deterministic_and_ignores_order():
    ids = [f"id{i}" for i in range(100)]
    sample = random_sample_ids(ids, 10, seed=3)
    assert len(set(sample)) == 10
    assert sorted(sample) == sorted(random_sample_ids(ids[::-1], 10, seed=3))
    assert sample != ids[:10]
    assert random_sample_ids(ids, 500, seed=3) and len(random_sample_ids(ids, 500, seed=3)) == 100


def test_models_are_evaluated_as_they_were_trained():
    assert eval_format("base") == ("seed", None)
    assert eval_format("m0") == ("seed", None)
    assert eval_format("m2") == ("curated", "seed")
    assert eval_format("m1_random") == ("curated", "seed")
    steps = _plan(run_dir="/r")
    assert (steps["eval_m1"].config.chat_format, steps["eval_m1"].config.source_tag) == (
        "curated",
        "seed",
    )


@pytest.mark.parametrize("name", ["humback_demo.yaml", "humback_7b_gpu.yaml"])
def test_shipped_recipes_plan(name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "jobs" / "configs" / name
    steps = plan(build_config(HumbackConfig, path))
    assert [s.name for s in steps if s.kind == "train"] == [
        "backward", "m0", "m1", "m1_random", "m2",
    ]  # fmt: skip
