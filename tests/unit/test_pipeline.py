"""The recipe-neutral pipeline on a toy recipe of its own kinds: plan, run, skip, resume,
redo downstream only, publish, status and the generic report (no Ray, milliseconds).

The toy recipe is what a new recipe is: a config, a plan of typed steps whose inputs are
references to earlier steps' outputs, and kinds whose runners are dotted paths.
"""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from selfalign.core import io, pointers
from selfalign.core.config import Strict
from selfalign.core.errors import ConfigError
from selfalign.pipeline.plan import Plan
from selfalign.pipeline.recipe import Recipe, RecipeConfig
from selfalign.pipeline.runner import run_pipeline, step_status
from selfalign.pipeline.step import Publish, StepKind, register

calls: list[tuple[str, bool]] = []
FAIL_ONCE: set[str] = set()


class NumbersConfig(Strict):
    output: str
    count: int = Field(3, ge=1)


class SumConfig(Strict):
    input: str
    output: str
    scale: int = 1


def write_numbers(config: NumbersConfig, context) -> dict:
    calls.append((config.output, context.overwrite))
    io.write_json(f"{config.output}/numbers.json", list(range(config.count)))
    io.write_json(f"{config.output}/model/config.json", {"toy": True})
    return {"count": config.count}


def add_up(config: SumConfig, context) -> dict:
    calls.append((config.output, context.overwrite))
    if config.output in FAIL_ONCE:
        FAIL_ONCE.discard(config.output)
        raise RuntimeError("killed mid-step")
    total = sum(io.read_json(config.input)) * config.scale
    io.write_json(config.output, {"total": total})
    return {"total": total}


register(
    StepKind(
        "toy_numbers",
        NumbersConfig,
        f"{__name__}:write_numbers",
        outputs={"numbers": "numbers.json", "model": "model"},
        headline=("count",),
        needs_ray=False,
    )
)
register(
    StepKind(
        "toy_sum",
        SumConfig,
        f"{__name__}:add_up",
        outputs={"result": ""},
        headline=("total",),
        needs_ray=False,
    )
)


class ToyConfig(RecipeConfig):
    count: int = 3
    scale: int = 1
    numbers: dict = Field(default_factory=dict)


def toy_plan(config: ToyConfig):
    plan = Plan("toy", config.run_dir, config.placement())
    numbers = plan.add(
        "numbers",
        "toy_numbers",
        settings=config.numbers,
        planned={"count": config.count},
        publishes=Publish(role="current", scorer_format="seed"),
        description="write numbers",
    )
    total = plan.add(
        "total",
        "toy_sum",
        planned={"input": numbers.ref("numbers"), "scale": config.scale},
        location="sums/total.json",
        description="add them up",
    )
    plan.add(
        "double",
        "toy_sum",
        planned={"input": numbers.ref("numbers"), "scale": 2},
        description="twice the sum",
    )
    assert total.step.needs == ("numbers",)
    return plan.steps


TOY = Recipe(name="toy", config_type=ToyConfig, plan=toy_plan, title="Toy report")


@pytest.fixture
def ray_config(tmp_path):
    path = tmp_path / "ray_config.yaml"
    path.write_text("profiles:\n  local:\n    device: cpu\n")
    return str(path)


def test_plan_resolves_references_into_the_producers_layout(tmp_path):
    steps = {s.name: s for s in toy_plan(ToyConfig(run_dir="/r"))}
    assert steps["total"].config.input == "/r/numbers/numbers.json"
    assert steps["total"].location == "/r/sums/total.json"
    assert steps["double"].config.output == "/r/double"
    assert set(steps["double"].needs) == {"numbers"}


def test_a_recipe_setting_cannot_override_what_the_recipe_decides():
    with pytest.raises(ConfigError, match="count cannot be set here"):
        toy_plan(ToyConfig(run_dir="/r", numbers={"count": 9}))
    with pytest.raises(ConfigError, match="toy config, numbers"):
        toy_plan(ToyConfig(run_dir="/r", count=0))


def test_references_must_name_a_real_output_of_an_earlier_step():
    plan = Plan("toy", "/r")
    numbers = plan.add("numbers", "toy_numbers")
    with pytest.raises(AssertionError, match="has no output 'totals'"):
        numbers.ref("totals")


def test_a_kind_name_is_registered_once():
    with pytest.raises(ValueError, match="already registered"):
        register(StepKind("toy_sum", NumbersConfig, f"{__name__}:write_numbers", outputs={}))


def test_run_skip_resume_and_redo_downstream_only(tmp_path, ray_config):
    calls.clear()
    run = str(tmp_path / "run")
    config = ToyConfig(run_dir=run, ray_config=ray_config)
    lines: list[str] = []
    summary = run_pipeline(TOY, config, progress=lines.append)
    assert summary["steps_done"] == summary["steps_total"] == 3
    assert io.read_json(f"{run}/sums/total.json") == {"total": 3}
    assert any("total: finished" in line and "total=3" in line for line in lines)
    # What the step publishes is published, to where a service follows the run.
    pointer = pointers.read_pointer(pointers.pointer_uri(run))
    assert pointer["model"] == f"{run}/numbers/model" and pointer["scorer_format"] == "seed"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["recipe"] == "toy" and [s["step"] for s in report["steps"]] == [
        "numbers",
        "total",
        "double",
    ]
    assert "<h1>Toy report</h1>" in (tmp_path / "run" / "report.html").read_text()

    # Nothing changed: everything is skipped.
    calls.clear()
    lines.clear()
    run_pipeline(TOY, config, progress=lines.append)
    assert calls == [] and sum("done earlier" in line for line in lines) == 3

    # A changed setting redoes its step (starting it over) and what reads it, nothing else.
    calls.clear()
    changed = config.model_copy(update={"scale": 5})
    assert [s["status"] for s in step_status(run, TOY.plan(changed))] == [
        "done",
        "changed",
        "done",
    ]
    run_pipeline(TOY, changed)
    assert calls == [(f"{run}/sums/total.json", True)]
    assert io.read_json(f"{run}/sums/total.json") == {"total": 15}

    # A step killed mid-way is "interrupted" and resumed (not started over) by the rerun.
    calls.clear()
    killed = changed.model_copy(update={"count": 4})
    FAIL_ONCE.add(f"{run}/double")
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(TOY, killed)
    assert [s["status"] for s in step_status(run, TOY.plan(killed))] == [
        "done",
        "done",
        "interrupted",
    ]
    run_pipeline(TOY, killed)
    assert calls[-1] == (f"{run}/double", False)
    assert io.read_json(f"{run}/double") == {"total": 12}
