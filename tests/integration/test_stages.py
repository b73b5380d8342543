"""Backtranslation and curation stages: real Ray, real vLLM, crashes and resumes.

The done-when of the stage work: kill the driver mid-stage (separately, one engine actor)
and show that the rerun ends with exactly the input id set, each once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.dataset as pads
import pytest

from selfalign.cli import main

pytestmark = pytest.mark.integration

# Small batches so that a stage writes many shards and can be interrupted between them.
RAY_CONFIG = """
profiles:
  local:
    device: cpu
    stages:
      default: {min_actors: 1, max_actors: 1, cpus_per_actor: 1, omp_threads: 2,
                batch_size: 8, max_concurrent_batches: 2}
"""
ENGINE_ARGS = ["vllm.max_model_len=512", "vllm.cpu_kv_cache_gib=1", "vllm.max_num_seqs=16"]


def write_segments(path: Path, count: int) -> set[str]:
    with path.open("w") as f:
        for i in range(count):
            text = f"Segment {i}. " + "Bread needs flour, water, salt and time to rise. " * (
                1 + i % 5
            )
            f.write(
                json.dumps({"id": f"seg-{i:04d}", "text": text, "source": f"doc{i % 7}.html"})
                + "\n"
            )
    return {f"seg-{i:04d}" for i in range(count)}


def ids_in(directory: Path) -> list[str]:
    return (
        pads.dataset(directory, format="parquet").to_table(columns=["id"]).column("id").to_pylist()
    )


def shard_count(directory: Path) -> int:
    return len(list(directory.glob("*.parquet"))) if directory.exists() else 0


@pytest.fixture()
def ray_config(tmp_path) -> str:
    path = tmp_path / "ray_config.yaml"
    path.write_text(RAY_CONFIG)
    return str(path)


def backtranslate_args(segments, out, ray_config, *extra):
    return [
        "backtranslate",
        "--input",
        str(segments),
        "--output",
        str(out),
        "--model",
        "embedded:tiny-random-llama",
        "--ray-config",
        ray_config,
        "sampling.max_tokens=24",
        *ENGINE_ARGS,
        *extra,
    ]


def test_killed_driver_resumes_with_each_id_exactly_once(ray_cluster, tmp_path, ray_config):
    segments = tmp_path / "segments.jsonl"
    expected = write_segments(segments, 240)
    out = tmp_path / "A"
    args = backtranslate_args(
        segments, out, ray_config, "--ray-address", ray_cluster.get_runtime_context().gcs_address
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfalign", *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 400
    while shard_count(out / "data") < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "the stage finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-stage, without cleanup
    proc.wait()
    partial = ids_in(out / "data")
    assert 0 < len(partial) < len(expected)
    assert json.loads((out / "_manifest.json").read_text())["status"] == "running"

    assert main(args) == 0  # the same command again
    final = ids_in(out / "data")
    assert sorted(final) == sorted(expected)  # every id, each exactly once
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["rows"] == len(expected) == manifest["accepted"] + manifest["rejected"]
    assert sum(manifest["reject_reasons"].values()) == manifest["rejected"]
    if manifest["rejected"]:
        assert len(ids_in(out / "rejects")) == manifest["rejected"]

    # A completed stage is skipped, not redone.
    before = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert main(args) == 0
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == before


def engine_actor_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "vLLMEngineStageUDF" in cmdline and "VLLM::" not in cmdline:
            pids.append(proc.info["pid"])
    return pids


def test_killed_engine_actor_is_replaced_and_rows_retried(ray_cluster, tmp_path, ray_config):
    segments = tmp_path / "segments.jsonl"
    expected = write_segments(segments, 160)
    out = tmp_path / "A"
    killed: list[int] = []

    def kill_one_actor_mid_stage():
        deadline = time.time() + 400
        while time.time() < deadline and not killed:
            if shard_count(out / "data") >= 1:
                for pid in engine_actor_pids():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.3)

    killer = threading.Thread(target=kill_one_actor_mid_stage, daemon=True)
    killer.start()
    assert main(backtranslate_args(segments, out, ray_config)) == 0
    killer.join(timeout=5)
    assert killed, "no engine actor was found to kill"
    assert sorted(ids_in(out / "data")) == sorted(expected)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["rows"] == len(expected)
    # Rows of the killed actor were retried on its replacement, not recorded as failures.
    assert "engine error" not in manifest["reject_reasons"]


def test_curate_scores_with_the_real_model_in_both_modes(ray_cluster, tmp_path, ray_config):
    pairs = tmp_path / "pairs.jsonl"
    good = (
        "Boil water, add the egg, cook it for eight minutes, then cool it in cold water "
        "before peeling."
    )
    rows = [
        {"id": "p1", "instruction": "How do I hard-boil an egg?", "response": good},
        {
            "id": "p2",
            "instruction": "How do I hard-boil an egg?",
            "response": "Click here to subscribe!",
        },
        {"id": "p3", "instruction": "What is the capital of France?", "response": "Paris."},
        {"id": "p4", "instruction": None, "response": "orphan", "reject_reason": None},
        {
            "id": "p5",
            "instruction": "dropped upstream",
            "response": "x",
            "reject_reason": "too short",
        },
    ]
    with pairs.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "scored"
    base = [
        "curate",
        "--input",
        str(pairs),
        "--model",
        "embedded:smollm2-135m-instruct",
        "--ray-config",
        ray_config,
        *ENGINE_ARGS,
    ]
    assert main([*base, "--output", str(out), "selection.min_score=1"]) == 0
    table = pads.dataset(out / "data", format="parquet").to_table().to_pylist()
    by_id = {r["id"]: r for r in table}
    assert set(by_id) == {"p1", "p2", "p3", "p4"}  # p5 was rejected upstream and skipped
    for pid in ("p1", "p2", "p3"):
        row = by_id[pid]
        assert row["reject_reason"] is None
        assert 1 <= row["score"] <= 5 and 1.0 <= row["expected_score"] <= 5.0
        assert sum(row["score_probs"]) == pytest.approx(1.0)
        assert 0 < row["score_mass"] <= 1
    assert by_id["p4"]["reject_reason"] == "invalid input"
    selected = pads.dataset(out / "selected", format="parquet").count_rows()
    assert selected == 3  # min_score=1 keeps every scored pair

    # Generate mode on the same pairs: reasoning then a parsed score, or a recorded reject.
    out_generate = tmp_path / "scored_generate"
    assert (
        main(
            [
                *base,
                "--output",
                str(out_generate),
                "--mode",
                "generate",
                "sampling.max_tokens=64",
                "selection.min_score=1",
            ]
        )
        == 0
    )
    rows_generate = pads.dataset(out_generate / "data", format="parquet").to_table().to_pylist()
    assert len(rows_generate) == 4
    for row in rows_generate:
        if row["id"] == "p4":
            continue
        assert row["curation_output"]
        assert (row["score"] is not None) != (row["reject_reason"] == "unparseable score")


def test_selection_thresholds_and_top_n(ray_cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from selfalign.stages.curate.config import SelectionSettings
    from selfalign.stages.curate.select import select

    (tmp_path / "data").mkdir()
    rows = [
        {"id": f"p{i}", "score": s, "expected_score": e, "reject_reason": r}
        for i, (s, e, r) in enumerate(
            [
                (5, 4.9, None),
                (5, 4.4, None),
                (4, 4.2, None),
                (3, 3.1, None),
                (None, None, "no score token"),
            ]
        )
    ]
    pq.write_table(pa.Table.from_pylist(rows[:3]), tmp_path / "data" / "a.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "data" / "b.parquet")

    def selected(selection: SelectionSettings) -> list[str]:
        counts = select(str(tmp_path), selection)
        assert (tmp_path / "selected").is_dir()
        files = list((tmp_path / "selected").glob("*.parquet"))
        ids = ids_in(tmp_path / "selected") if files else []
        assert counts["selected"] == len(ids)
        return sorted(ids)

    assert selected(SelectionSettings(min_score=5)) == ["p0", "p1"]
    assert selected(SelectionSettings(min_score=None, min_expected=4.3)) == ["p0", "p1"]
    assert selected(SelectionSettings(min_score=4, min_expected=4.5)) == ["p0"]
    assert selected(SelectionSettings(min_score=None, top_n=3)) == ["p0", "p1", "p2"]
    assert selected(SelectionSettings(min_score=1, top_n=1)) == ["p0"]
    # Nothing passes: an empty selected/ (and a count of 0), not an error.
    assert selected(SelectionSettings(min_score=5, min_expected=5.0)) == []
