"""Collects a Humback run directory's figures into ``report.json`` and ``report.html``.

Reads only what the steps wrote (step records, stage outputs, metrics, evaluations), so
it can be rebuilt at any time, also for a run that has not finished.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from selfalign.humback import HumbackConfig, Step, eval_recipe
from selfalign.runtime import io
from selfalign.runtime.loop import STEPS_DIR, read_json, read_table

EXAMPLES_PER_SCORE = 2


def _metrics(uri: str) -> list[dict]:
    import pyarrow.fs as pafs

    filesystem, path = io.filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return []
    with filesystem.open_input_stream(path) as stream:
        lines = stream.read().decode().splitlines()
    return [row for row in (json.loads(line) for line in lines if line.strip()) if "loss" in row]


def _rate(step: Step, record: dict, curve: list[dict]) -> tuple[float | None, str | None]:
    result, elapsed = record.get("result") or {}, record.get("elapsed_s") or 0
    if step.kind == "train":
        tokens, seconds = (
            sum(r.get("tokens", 0) for r in curve),
            sum(r.get("step_s", 0) for r in curve),
        )
        return (tokens / seconds, "tokens/s") if seconds else (None, None)
    if step.kind == "evaluate":
        loss_s = result.get("loss_s")
        return (result.get("heldout_tokens", 0) / loss_s, "tokens/s") if loss_s else (None, None)
    count = {
        "ingest_seed": result.get("records_in"),
        "ingest_corpus": result.get("documents_in"),
        "backtranslate": result.get("rows"),
        "curate": result.get("rows"),
    }.get(step.kind)
    unit = {"ingest_corpus": "documents/s", "ingest_seed": "records/s"}.get(step.kind, "rows/s")
    return (count / elapsed, unit) if count and elapsed else (None, None)


def collect(config: HumbackConfig, steps: list[Step]) -> dict[str, Any]:
    import pyarrow.compute as pc

    run = config.run_dir.rstrip("/")
    records = {s.name: read_json(f"{run}/{STEPS_DIR}/{s.name}.json") for s in steps}
    done = {
        name
        for name, rec in records.items()
        if rec and rec.get("fingerprint") == next(s for s in steps if s.name == name).fingerprint
    }

    curves = {}
    training = []
    for step in steps:
        if step.kind != "train" or step.name not in done:
            continue
        curves[step.name] = _metrics(f"{step.output}/metrics.jsonl")
        result = records[step.name]["result"]
        final = result.get("final_metrics") or {}
        rate, _ = _rate(step, records[step.name], curves[step.name])
        training.append(
            {
                "model": step.name,
                "examples": result.get("examples"),
                "steps": result.get("steps"),
                "batch_size": result.get("batch_size"),
                "final_loss": final.get("loss"),
                "tokens_per_s": rate,
                "elapsed_s": result.get("elapsed_s"),
            }
        )

    step_rows = []
    for step in steps:
        if step.name not in done:
            step_rows.append({"step": step.name, "kind": step.kind, "elapsed_s": None})
            continue
        rate, unit = _rate(step, records[step.name], curves.get(step.name, []))
        step_rows.append(
            {
                "step": step.name,
                "kind": step.kind,
                "elapsed_s": records[step.name]["elapsed_s"],
                "rate": rate,
                "rate_unit": unit,
            }
        )

    heldout, samples = [], []
    for step in steps:
        if step.kind != "evaluate" or step.name not in done:
            continue
        result = read_json(step.output) or {}
        model = step.name.removeprefix("eval_")
        recipe, source = eval_recipe(model)
        heldout.append(
            {
                "model": model,
                "heldout_loss": result.get("heldout_loss"),
                "heldout_token_loss": result.get("heldout_token_loss"),
                "heldout_examples": result.get("heldout_examples"),
                "prompted_as": recipe + (f" + {source} tag" if source else ""),
            }
        )
        samples.append({"model": model, "samples": result.get("samples", [])})
    by_model = {r["model"]: r["heldout_loss"] for r in heldout}
    ablation = None
    if by_model.get("m1") is not None and by_model.get("m1_random") is not None:
        ablation = {
            "curated": by_model["m1"],
            "random": by_model["m1_random"],
            "difference": by_model["m1"] - by_model["m1_random"],
        }

    curation, examples, examples_iteration = [], {}, None
    for step in steps:
        if step.kind != "curate" or step.name not in done:
            continue
        t = int(step.name.split("_")[1])
        table = read_table(
            f"{step.output}/data",
            columns=["id", "instruction", "response", "score", "expected_score", "reject_reason"],
        )
        if "reject_reason" in table.column_names:
            table = table.filter(pc.field("reject_reason").is_null())
        scores = table.column("score").to_pylist() if "score" in table.column_names else []
        expected = (
            [x for x in table.column("expected_score").to_pylist() if x is not None]
            if "expected_score" in table.column_names
            else []
        )
        selection = step.config.selection
        result = records[step.name]["result"]
        curation.append(
            {
                "iteration": t,
                "scorer": f"m{t - 1}",
                "rows": table.num_rows,
                "selected": result.get("selected"),
                "selection": ", ".join(
                    f"{k}={v}" for k, v in selection.model_dump().items() if v is not None
                ),
                "threshold": selection.min_expected,
                "score_counts": {str(s): scores.count(s) for s in range(1, 6)},
                "expected_scores": [round(x, 4) for x in expected],
                "mean_expected": sum(expected) / len(expected) if expected else None,
            }
        )
        examples, examples_iteration = {}, t  # the latest iteration's examples win
        rows = sorted(table.to_pylist(), key=lambda r: (-(r.get("expected_score") or 0), r["id"]))
        for row in rows:
            bucket = examples.setdefault(str(row.get("score")), [])
            if len(bucket) < EXAMPLES_PER_SCORE:
                bucket.append(
                    {k: row.get(k) for k in ("instruction", "response", "expected_score")}
                )

    augment: dict[str, Any] = {}
    lengths: dict[str, list[int]] = {"segment_chars": [], "instruction_chars": []}
    if "augment" in done:
        augment = records["augment"]["result"]
        table = read_table(
            f"{run}/augment/data", columns=["response", "instruction", "reject_reason"]
        )
        lengths["segment_chars"] = [len(t or "") for t in table.column("response").to_pylist()]
        accepted = table.filter(pc.field("reject_reason").is_null())
        lengths["instruction_chars"] = [
            len(t or "") for t in accepted.column("instruction").to_pylist()
        ]

    return {
        "run_dir": run,
        "model": config.model,
        "iterations": config.iterations,
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        "steps_done": len(done),
        "steps_total": len(steps),
        "steps": step_rows,
        "heldout": heldout,
        "ablation": ablation,
        "curation": curation,
        "examples": examples,
        "examples_iteration": examples_iteration,
        "augment": augment,
        "lengths": lengths,
        "training": training,
        "loss_curves": {
            name: [{"step": r["step"], "loss": r["loss"]} for r in rows]
            for name, rows in curves.items()
        },
        "samples": samples,
    }


def write_report(config: HumbackConfig, steps: list[Step]) -> dict[str, Any]:
    """Write ``report.json`` and ``report.html`` into the run directory; returns a summary."""
    from selfalign.report import render_html

    run = config.run_dir.rstrip("/")
    report = collect(config, steps)
    io.write_json(f"{run}/report.json", report)
    io.write_text(f"{run}/report.html", render_html(report))
    location = f"{run}/report.html"
    if "://" not in location:
        location = os.path.abspath(location)
    return {
        "report": location,
        "steps_done": report["steps_done"],
        "steps_total": report["steps_total"],
        "heldout_loss": {r["model"]: r["heldout_loss"] for r in report["heldout"]},
        "ablation": report["ablation"],
        "curated": {c["iteration"]: c["selected"] for c in report["curation"]},
    }
