"""Collects a run directory's figures into ``report.json`` and ``report.html``.

The generic part knows step kinds, not recipes: time and throughput of every step,
held-out loss of every ``evaluate`` step, loss curves of every ``train`` step, sample
generations. A recipe adds its own sections (``Recipe.report`` / ``Recipe.render``).
Reads only what the steps wrote, so it can be rebuilt at any time, also for a run that
has not finished.
"""

from __future__ import annotations

import os
import time
from typing import Any

from selfalign.core import io
from selfalign.pipeline.recipe import Recipe, RecipeConfig, ReportInput
from selfalign.pipeline.runner import finished_records
from selfalign.pipeline.step import Step, kind_of
from selfalign.training.metrics import read_steps


def _prompted_as(step: Step) -> str:
    tag = getattr(step.config, "source_tag", None)
    return step.config.chat_format + (f" + {tag} tag" if tag else "")


def collect(recipe: Recipe, config: RecipeConfig, steps: list[Step]) -> dict[str, Any]:
    run = config.run_dir.rstrip("/")
    records = finished_records(run, steps)
    done = [s for s in steps if s.name in records]

    step_rows = []
    for step in steps:
        record = records.get(step.name)
        if record is None:
            step_rows.append({"step": step.name, "kind": step.kind, "elapsed_s": None})
            continue
        rate_of = kind_of(step.kind).rate
        rate, unit = rate_of(record["result"], record["elapsed_s"]) if rate_of else (None, None)
        step_rows.append(
            {
                "step": step.name,
                "kind": step.kind,
                "elapsed_s": record["elapsed_s"],
                "rate": rate,
                "rate_unit": unit,
            }
        )

    curves, training = {}, []
    for step in (s for s in done if s.kind == "train"):
        name = step.labels.get("model", step.name)
        curves[name] = read_steps(step.output("metrics"))
        result = records[step.name]["result"]
        final = result.get("final_metrics") or {}
        training.append(
            {
                "model": name,
                "examples": result.get("examples"),
                "steps": result.get("steps"),
                "batch_size": result.get("batch_size"),
                "final_loss": final.get("loss"),
                "tokens_per_s": result.get("tokens_per_s"),
                "elapsed_s": result.get("elapsed_s"),
            }
        )

    heldout, samples = [], []
    for step in (s for s in done if s.kind == "evaluate"):
        result = io.read_json(step.output("result")) or {}
        model = step.labels.get("model", step.name)
        heldout.append(
            {
                "model": model,
                "heldout_loss": result.get("heldout_loss"),
                "heldout_token_loss": result.get("heldout_token_loss"),
                "heldout_examples": result.get("heldout_examples"),
                "prompted_as": _prompted_as(step),
            }
        )
        samples.append({"model": model, "samples": result.get("samples", [])})

    report = {
        "recipe": recipe.name,
        "title": recipe.title or f"{recipe.name} run report",
        "run_dir": run,
        "model": config.model,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps_done": len(done),
        "steps_total": len(steps),
        "steps": step_rows,
        "heldout": heldout,
        "training": training,
        "loss_curves": {
            name: [{"step": r["step"], "loss": r["loss"]} for r in rows]
            for name, rows in curves.items()
        },
        "samples": samples,
    }
    if recipe.report is not None:
        report.update(recipe.report(ReportInput(config=config, steps=steps, records=records)))
    return report


def write_report(recipe: Recipe, config: RecipeConfig, steps: list[Step]) -> dict[str, Any]:
    """Write ``report.json`` and ``report.html`` into the run directory; returns a summary."""
    from selfalign.pipeline.html import render_html

    run = config.run_dir.rstrip("/")
    report = collect(recipe, config, steps)
    sections = recipe.render(report) if recipe.render is not None else []
    io.write_json(f"{run}/report.json", report)
    io.write_text(f"{run}/report.html", render_html(report, sections))
    location = f"{run}/report.html"
    if "://" not in location:
        location = os.path.abspath(location)
    return {
        "report": location,
        "steps_done": report["steps_done"],
        "steps_total": report["steps_total"],
        "heldout_loss": {r["model"]: r["heldout_loss"] for r in report["heldout"]},
        **{k: report[k] for k in ("ablation", "curated") if k in report},
    }
