"""Runs a recipe's plan step by step, resumably; knows nothing of any recipe.

Run directory layout (every path local or object store)::

    _selfalign_config.yaml     the resolved recipe config
    _steps/<step>.json         a finished step: its fingerprint, result, timings
    _steps/<step>.started.json the fingerprint a step was started with
    _manifest.json             every step's status (done, interrupted, changed, pending)
    <step locations>/          what each step writes
    report.html, report.json   the run report (rewritten at the end of every run)

A rerun skips the steps whose record matches their fingerprint, resumes an interrupted
step (each stage resumes on its own: Ray Data checkpoints, Ray Train checkpoints), and
redoes a step whose settings, or whose inputs' settings, changed, clearing its output.
After a step, what it publishes (``Step.publishes``) is published to services that
follow the run (``selfalign.core.pointers``).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from selfalign.core import io, pointers
from selfalign.core.config import RESOLVED_CONFIG_NAME, config_to_yaml
from selfalign.core.resources import load_ray_config
from selfalign.pipeline.execute import StepContext
from selfalign.pipeline.recipe import Recipe, RecipeConfig
from selfalign.pipeline.step import Step, kind_of

log = logging.getLogger(__name__)

STEPS_DIR = "_steps"


def record_uri(run_dir: str, step: Step, *, started: bool = False) -> str:
    suffix = ".started.json" if started else ".json"
    return f"{run_dir.rstrip('/')}/{STEPS_DIR}/{step.name}{suffix}"


def finished_records(run_dir: str, steps: list[Step]) -> dict[str, dict]:
    """The records of the steps finished with their current fingerprint."""
    out = {}
    for step in steps:
        record = io.read_json(record_uri(run_dir, step))
        if record and record.get("fingerprint") == step.fingerprint:
            out[step.name] = record
    return out


def step_status(run_dir: str, steps: list[Step]) -> list[dict[str, Any]]:
    """Each planned step and whether the run directory has it done, started or not."""
    out = []
    for step in steps:
        record = io.read_json(record_uri(run_dir, step))
        started = io.read_json(record_uri(run_dir, step, started=True))
        if record and record.get("fingerprint") == step.fingerprint:
            status = "done"
        elif record or (started and started.get("fingerprint") != step.fingerprint):
            status = "changed"
        elif started:
            status = "interrupted"
        else:
            status = "pending"
        out.append({"step": step.name, "status": status, "description": step.description})
    return out


def _runner(path: str) -> Callable[..., dict]:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def run_pipeline(
    recipe: Recipe,
    config: RecipeConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) ``recipe``'s plan; returns the report's summary."""
    from selfalign.core.cluster import ensure_ray
    from selfalign.pipeline.report import write_report

    say = progress or (lambda message: log.info("%s", message))
    steps = recipe.plan(config)  # every step's config is validated before anything runs
    run = config.run_dir.rstrip("/")
    profile = load_ray_config(config.ray_config).profile(config.profile)
    if overwrite:
        io.clear_output(run)
    io.write_text(f"{run}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    started_all = time.time()
    for index, step in enumerate(steps, 1):
        label = f"[{index}/{len(steps)}] {step.name}"
        done_uri, started_uri = record_uri(run, step), record_uri(run, step, started=True)
        record = io.read_json(done_uri)
        if record and record.get("fingerprint") == step.fingerprint:
            say(f"{label}: done earlier ({record.get('elapsed_s', 0):.0f} s), skipped")
            continue
        started = io.read_json(started_uri)
        # Settings changed since the output was written: start that step over.
        fresh = bool(record) or bool(started and started.get("fingerprint") != step.fingerprint)
        how = "redo (settings changed)" if fresh else ("resume" if started else "start")
        say(f"{label}: {how}: {step.description}")
        kind = kind_of(step.kind)
        if kind.needs_ray:
            ensure_ray(profile, config.ray_address)
        if record:
            # The old result is void; should this redo be interrupted too, the next run
            # resumes it (its started record matches) instead of starting it over again.
            io.delete_file(done_uri)
        io.write_json(started_uri, {"fingerprint": step.fingerprint, "started": time.time()})
        t0 = time.perf_counter()
        context = StepContext(profile=profile, run_dir=run, overwrite=fresh)
        result = _runner(kind.run)(step.config, context)
        if step.publishes is not None:
            # A scoring service following this run switches to the model as it lands.
            result["published"] = pointers.publish_model(
                run,
                step.output("model"),
                role=step.publishes.role,
                scorer_format=step.publishes.scorer_format,
            )
        elapsed = time.perf_counter() - t0
        io.write_json(
            done_uri,
            {
                "step": step.name,
                "kind": step.kind,
                "fingerprint": step.fingerprint,
                "elapsed_s": round(elapsed, 2),
                "finished": time.time(),
                "result": result,
            },
        )
        say(f"{label}: finished in {elapsed:.0f} s{headline(kind.headline, result)}")
        write_manifest(recipe.name, run, steps)

    write_manifest(recipe.name, run, steps)
    summary = write_report(recipe, config, steps)
    summary["elapsed_s"] = round(time.time() - started_all, 1)
    say(f"report: {summary['report']}")
    return summary


def write_manifest(recipe: str, run_dir: str, steps: list[Step]) -> None:
    """``<run>/_manifest.json``: every step's status, for people and tools watching a run."""
    status = step_status(run_dir, steps)
    io.write_json(
        f"{run_dir.rstrip('/')}/_manifest.json",
        {
            "pipeline": recipe,
            "status": "complete" if all(s["status"] == "done" for s in status) else "running",
            "updated": time.time(),
            "steps": status,
        },
    )


def headline(keys: tuple[str, ...], result: dict) -> str:
    """``": rows=96, selected=24"`` from a step's result (any keys it lacks show None)."""
    if not keys:
        return ""
    parts = [
        f"{k}={result[k]:.4g}" if isinstance(result.get(k), float) else f"{k}={result.get(k)}"
        for k in keys
    ]
    return ": " + ", ".join(parts)
