"""The whole loop on the real embedded model: every step, the report, resume after a kill.

SmolLM2-135M, not the tiny random model: a random model's "instructions" are all
rejected (it writes newlines), which would leave the curated path untested. Sizes are
the smallest that exercise every step: 12 segments, one optimizer step per model.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

RAY_CONFIG = """
profiles:
  local:
    device: cpu
    stages:
      default: {min_actors: 1, max_actors: 1, cpus_per_actor: 1, omp_threads: 2,
                batch_size: 8, max_concurrent_batches: 2}
    train: {num_workers: 1, cpus_per_worker: 1, omp_threads: 2, zero_stage: 2}
"""

ENGINE = {"max_model_len": 1024, "cpu_kv_cache_gib": 1, "max_num_seqs": 16}


def loop_config(tmp_path: Path, ray_config: Path) -> dict:
    return {
        "run_dir": str(tmp_path / "run"),
        "model": "embedded:smollm2-135m-instruct",
        "iterations": 2,
        "ray_config": str(ray_config),
        "corpus": {"limit_files": 12},
        "heldout": {"size": 8},
        "segments_limit": 12,
        "backtranslate": {"sampling": {"max_tokens": 32}, "vllm": ENGINE},
        "curate": {"selection": {"min_score": None, "top_n": 5}, "vllm": ENGINE},
        "train": {"common": {"max_steps": 1, "batch_size": 4, "gradient_accumulation_steps": 2,
                             "max_seq_len": 512}},
        "evaluation": {"max_new_tokens": 8, "max_seq_len": 512,
                       "prompts": ["Name one prime number."]},
    }  # fmt: skip


def run_loop(config_path: Path, *extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "selfalign", "run", "humback", "--config", str(config_path), *extra],
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_loop_end_to_end_then_resume_after_kill(tmp_path, smollm2_path):
    ray_config = tmp_path / "ray_config.yaml"
    ray_config.write_text(RAY_CONFIG)
    config = loop_config(tmp_path, ray_config)
    config_path = tmp_path / "humback.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run = Path(config["run_dir"])
    steps_dir = run / "_steps"

    # First run: killed (the whole process group, no cleanup) once M_yx is trained.
    proc = run_loop(config_path)
    deadline = time.time() + 420
    while not (steps_dir / "backward.json").exists() and proc.poll() is None:
        assert time.time() < deadline, "the backward model was not trained in time"
        time.sleep(0.2)
    assert proc.poll() is None, f"the loop stopped early: {proc.communicate()[1][-3000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.stem: json.loads(p.read_text()) for p in steps_dir.glob("*.json")
                if not p.name.endswith(".started.json")}  # fmt: skip
    assert {"ingest_seed", "ingest_corpus", "split", "backward"} <= set(finished)
    assert "m2" not in finished and not (run / "report.html").exists()

    # The same command again continues: finished steps are skipped, not redone.
    proc = run_loop(config_path)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-5000:]
    for name, record in finished.items():
        assert f"{name}: done earlier" in err
        assert (
            json.loads((steps_dir / f"{name}.json").read_text())["finished"] == record["finished"]
        )
    assert "m2: start" in err

    report = json.loads((run / "report.json").read_text())
    assert report["steps_done"] == report["steps_total"] == 19
    losses = {r["model"]: r["heldout_loss"] for r in report["heldout"]}
    assert set(losses) == {"base", "m0", "m1", "m1_random", "m2"}
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    assert report["ablation"]["difference"] == pytest.approx(losses["m1"] - losses["m1_random"])
    # Trained models differ from the base model.
    assert len({round(v, 6) for v in losses.values()}) > 1

    # The data flow adds up: held-out pairs never train; A(t) and the ablation sample are
    # the same size; mixes = seed train pairs + selected pairs, tagged by source.
    split = json.loads((steps_dir / "split.json").read_text())["result"]
    assert split["heldout"] == 8
    kept = {}
    for t in (1, 2):
        curate = json.loads((steps_dir / f"curate_{t}.json").read_text())["result"]
        # top_n=5 of the pairs scored (the tiny model's instructions may be rejected).
        kept[t] = curate["selected"]
        assert kept[t] == min(5, curate["accepted"]) and kept[t] > 0
        mix = json.loads((steps_dir / f"mix_{t}.json").read_text())["result"]
        assert mix == {
            "seed": split["train"],
            "augmented": kept[t],
            "rows": split["train"] + kept[t],
        }
    mix_random = json.loads((steps_dir / "mix_1_random.json").read_text())["result"]
    assert mix_random["augmented"] == kept[1]
    import pyarrow.parquet as pq

    mix = pq.read_table(run / "mix_1" / "data").to_pylist()
    heldout_ids = set(pq.read_table(run / "seed_split" / "heldout").column("id").to_pylist())
    assert not heldout_ids & {r["id"] for r in mix}
    assert {r["source"] for r in mix} == {"seed", "augmented"}
    selected = set(pq.read_table(run / "curate_1" / "selected").column("id").to_pylist())
    assert {r["id"] for r in mix if r["source"] == "augmented"} == selected
    random_ids = {
        r["id"] for r in pq.read_table(run / "mix_1_random" / "data").to_pylist()
        if r["source"] == "augmented"
    }  # fmt: skip
    assert len(random_ids) == kept[1]

    page = (run / "report.html").read_text()
    assert page.count("<svg") == 6 and "Name one prime number." in page

    # A third run has nothing left to do; --status agrees.
    status = subprocess.run(
        [sys.executable, "-m", "selfalign", "run", "humback", "--config", str(config_path),
         "--status"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert status.stdout.count("done ") == 19
    # A changed selection redoes curation onwards, and only that.
    changed = subprocess.run(
        [sys.executable, "-m", "selfalign", "run", "humback", "--config", str(config_path),
         "--status", "curate.selection.top_n=3"], capture_output=True, text=True, check=True,
    )  # fmt: skip
    states = dict(line.split()[1::-1] for line in changed.stdout.splitlines())
    assert states["m0"] == "done" and states["augment"] == "done"
    assert states["curate_1"] == "changed" and states["m2"] == "changed"
