"""Runs the Humback plan (``selfalign.humback.plan``) step by step, resumably.

Run directory layout (every path local or object store)::

    _selfalign_config.yaml     the resolved HumbackConfig
    _steps/<step>.json         a finished step: its fingerprint, result, timings
    _steps/<step>.started.json the fingerprint a step was started with
    _manifest.json             every step's status (done, interrupted, changed, pending)
    seed/ corpus/ seed_split/ backward/ augment/ m0/ curate_1/ mix_1/ m1/ ... eval/
    report.html, report.json   the run report (rewritten at the end of every run)

A rerun skips the steps whose record matches their fingerprint, resumes an interrupted
step (each stage resumes on its own: Ray Data checkpoints, Ray Train checkpoints), and
redoes a step whose settings, or whose inputs' settings, changed, clearing its output.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from selfalign.config import RESOLVED_CONFIG_NAME, ConfigError, config_to_yaml, load_ray_config
from selfalign.humback import HumbackConfig, Step, heldout_ids, plan, random_sample_ids
from selfalign.runtime import io

log = logging.getLogger(__name__)

STEPS_DIR = "_steps"


def read_json(uri: str) -> Any | None:
    import pyarrow.fs as pafs

    filesystem, path = io.filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return json.loads(stream.read().decode())


def read_table(uri: str, columns: list[str] | None = None):
    """A Parquet directory as one Arrow table (the loop's own small reads)."""
    dataset = io.parquet_dataset(uri)
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=columns)


def write_table(uri: str, table) -> None:
    import pyarrow.parquet as pq

    io.clear_output(uri)
    filesystem, path = io.filesystem_for(uri)
    filesystem.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/part-00000.parquet", filesystem=filesystem)


def step_status(config: HumbackConfig) -> list[dict[str, Any]]:
    """Each planned step and whether this run directory has it done, started or not."""
    run = config.run_dir.rstrip("/")
    out = []
    for step in plan(config):
        record = read_json(f"{run}/{STEPS_DIR}/{step.name}.json")
        started = read_json(f"{run}/{STEPS_DIR}/{step.name}.started.json")
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


def run_humback(
    config: HumbackConfig,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or continue) the loop; returns the report's summary."""
    from selfalign.runtime.cluster import ensure_ray
    from selfalign.runtime.report import write_report

    say = progress or (lambda message: log.info("%s", message))
    steps = plan(config)  # every step's config is validated before anything runs
    run = config.run_dir.rstrip("/")
    profile = load_ray_config(config.ray_config).profile(config.profile)
    if overwrite:
        io.clear_output(run)
    io.write_text(f"{run}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    started_all = time.time()
    for index, step in enumerate(steps, 1):
        label = f"[{index}/{len(steps)}] {step.name}"
        record_uri = f"{run}/{STEPS_DIR}/{step.name}.json"
        started_uri = f"{run}/{STEPS_DIR}/{step.name}.started.json"
        record = read_json(record_uri)
        if record and record.get("fingerprint") == step.fingerprint:
            say(f"{label}: done earlier ({record.get('elapsed_s', 0):.0f} s), skipped")
            continue
        started = read_json(started_uri)
        # Settings changed since the output was written: start that step over.
        fresh = bool(record) or bool(started and started.get("fingerprint") != step.fingerprint)
        how = "redo (settings changed)" if fresh else ("resume" if started else "start")
        say(f"{label}: {how}: {step.description}")
        ensure_ray(profile, config.ray_address)
        if record:
            # The old result is void; should this redo be interrupted too, the next run
            # resumes it (its started record matches) instead of starting it over again.
            _delete(record_uri)
        io.write_json(started_uri, {"fingerprint": step.fingerprint, "started": time.time()})
        t0 = time.perf_counter()
        result = RUNNERS[step.kind](step, fresh=fresh, profile=profile, run=run)
        elapsed = time.perf_counter() - t0
        io.write_json(
            record_uri,
            {
                "step": step.name,
                "kind": step.kind,
                "fingerprint": step.fingerprint,
                "elapsed_s": round(elapsed, 2),
                "finished": time.time(),
                "result": result,
            },
        )
        say(f"{label}: finished in {elapsed:.0f} s{_headline(step.kind, result)}")
        _write_manifest(config)

    _write_manifest(config)
    summary = write_report(config, steps)
    summary["elapsed_s"] = round(time.time() - started_all, 1)
    say(f"report: {summary['report']}")
    return summary


def _delete(uri: str) -> None:
    filesystem, path = io.filesystem_for(uri)
    filesystem.delete_file(path)


def _write_manifest(config: HumbackConfig) -> None:
    """``<run>/_manifest.json``: every step's status, for people and tools watching a run."""
    run = config.run_dir.rstrip("/")
    steps = step_status(config)
    io.write_json(
        f"{run}/_manifest.json",
        {
            "pipeline": "humback",
            "status": "complete" if all(s["status"] == "done" for s in steps) else "running",
            "updated": time.time(),
            "steps": steps,
        },
    )


def _headline(kind: str, result: dict) -> str:
    keys = {
        "ingest_seed": ("pairs_out",),
        "ingest_corpus": ("segments_out",),
        "split": ("train", "heldout"),
        "train": ("examples", "steps"),
        "backtranslate": ("accepted", "rejected"),
        "curate": ("rows", "selected"),
        "mix": ("seed", "augmented"),
        "evaluate": ("heldout_loss",),
    }[kind]
    parts = [
        f"{k}={result[k]:.4g}" if isinstance(result.get(k), float) else f"{k}={result.get(k)}"
        for k in keys
    ]
    return ": " + ", ".join(parts)


# --------------------------------------------------------------------------- steps


def _ingest_seed(step: Step, **_: Any) -> dict:
    from selfalign.commands.ingest import run_seed

    stats = run_seed(step.config)
    if not stats["balance"]["ok"]:
        raise RuntimeError(f"seed ingestion counts do not add up: {stats['balance']}")
    return stats


def _ingest_corpus(step: Step, **_: Any) -> dict:
    from selfalign.commands.ingest import run_corpus

    stats = run_corpus(step.config)
    if not stats["balance"]["ok"]:
        raise RuntimeError(f"corpus ingestion counts do not add up: {stats['balance']}")
    return stats


def _count(uri: str) -> int:
    return read_table(uri, columns=["id"]).num_rows


def _split(step: Step, **_: Any) -> dict:
    import pyarrow.compute as pc

    table = read_table(step.config["input"])
    ids = table.column("id").to_pylist()
    if step.config["size"] >= len(ids):
        raise ConfigError(
            f"heldout.size {step.config['size']} leaves no seed pairs to train on ({len(ids)} pairs)"
        )
    held = heldout_ids(ids, step.config["size"], step.config["seed"])
    is_held = pc.is_in(table.column("id"), value_set=_array(sorted(held)))
    write_table(f"{step.output}/train", table.filter(pc.invert(is_held)))
    write_table(f"{step.output}/heldout", table.filter(is_held))
    return {"train": len(ids) - len(held), "heldout": len(held)}


def _array(values: list):
    import pyarrow as pa

    return pa.array(values, type=pa.string())


def _train(step: Step, *, fresh: bool, profile, run: str, **_: Any) -> dict:
    from selfalign.runtime.train import train
    from selfalign.serving import publish_model

    summary = train(step.config, profile, overwrite=fresh)
    # A scoring service watching this run (`selfalign serve model_pointer=<run>/serve/current.json`) switches to
    # each new model as it lands: M_yx as the backward model, M0, M1, ... as the scorer.
    # The ablation's model is never published.
    model = f"{step.output}/model"
    if step.name == "backward":
        summary["published"] = publish_model(run, model, role="backward")
    elif re.fullmatch(r"m\d+", step.name):
        recipe = "seed" if step.name == "m0" else "curated"
        summary["published"] = publish_model(run, model, role="current", scorer_recipe=recipe)
    return summary


def _backtranslate(step: Step, *, fresh: bool, **_: Any) -> dict:
    from selfalign.commands.backtranslate import run

    return run(step.config, overwrite=fresh)


def _curate(step: Step, *, fresh: bool, **_: Any) -> dict:
    from selfalign.commands.curate import run

    return run(step.config, overwrite=fresh)


def _mix(step: Step, **_: Any) -> dict:
    """Seed pairs (tagged ``seed``) + augmented pairs (tagged ``augmented``): one training set.

    The tags are set here, whatever the inputs called their source (an oasst1 seed set
    says ``oasst1``): the curated recipe knows exactly these two.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = ["id", "instruction", "response"]
    seed = read_table(step.config["seed"], columns=[*columns, "messages"])
    augmented = read_table(step.config["augmented"], columns=[*columns, "reject_reason"])
    if augmented.num_rows == 0:  # nothing selected (or scored): M_t trains on the seed alone
        augmented = pa.table({c: pa.array([], pa.string()) for c in columns})
    if "reject_reason" in augmented.column_names:
        augmented = augmented.filter(pc.field("reject_reason").is_null())
    sample = step.config["sample"]
    if sample is not None:
        size = _count(sample["size_of"])
        chosen = random_sample_ids(augmented.column("id").to_pylist(), size, sample["seed"])
        augmented = augmented.filter(pc.is_in(augmented.column("id"), value_set=_array(chosen)))
    rows = [{**row, "source": "seed"} for row in seed.to_pylist()]
    rows += [
        {
            "id": r["id"],
            "instruction": r["instruction"],
            "response": r["response"],
            "source": "augmented",
        }
        for r in augmented.select(columns).to_pylist()
    ]
    if "messages" in seed.column_names:
        for row in rows:
            row.setdefault("messages", None)
    write_table(f"{step.output}/data", pa.Table.from_pylist(rows))
    return {"seed": seed.num_rows, "augmented": augmented.num_rows, "rows": len(rows)}


def _evaluate(step: Step, *, profile, **_: Any) -> dict:
    from selfalign.runtime.evaluate import evaluate

    heldout = read_table(step.config["heldout"]).to_pylist()
    result = evaluate(profile=profile, **{**step.config, "heldout": heldout})
    io.write_json(step.output, result)
    return {k: v for k, v in result.items() if k != "samples"}


RUNNERS: dict[str, Callable[..., dict]] = {
    "ingest_seed": _ingest_seed,
    "ingest_corpus": _ingest_corpus,
    "split": _split,
    "train": _train,
    "backtranslate": _backtranslate,
    "curate": _curate,
    "mix": _mix,
    "evaluate": _evaluate,
}
