"""Training throughput: sequence packing vs per-example padding, and ZeRO-2 vs ZeRO-3.

Three runs of ``selfalign.training.driver.train`` in one Ray session, same model, same
examples in the same order (the step plan is seeded), 2 CPU workers (local profile):

  (a) packing, ZeRO-2   — the default;
  (b) padding, ZeRO-2   — each micro-batch a rectangle padded to its longest example
                           (consecutive examples of the shuffle, no length bucketing);
  (c) packing, ZeRO-3   — parameters partitioned too (all-gathered per layer).

Data: the embedded seed set (``selfalign/data/seed_pairs.jsonl``, seed chat format); with
``--data standin`` (or when the seed set is missing) a stand-in with an oasst1-like
long-tailed length distribution is generated, and the result says so. Figure per run: *real* (non-padding) tokens per second of training
step time, first step excluded (warm-up), read from the run's ``metrics.jsonl``; both
packing and padding train on exactly the same real tokens.

    .venv/bin/python benchmarks/train.py                 # writes benchmarks/results/train.json
    .venv/bin/python benchmarks/train.py --model embedded:tiny-random-llama --steps 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "train.json"
RUNS = (
    ("packing_zero2", True, 2),
    ("padding_zero2", False, 2),
    ("packing_zero3", True, 3),
)


def seed_rows(directory: Path, data: str) -> tuple[str, str]:
    """(path to the training rows, description of where they came from)."""
    from selfalign.core.embedded import seed_pairs_path

    path = seed_pairs_path()
    if data == "seed" and Path(path).is_file():
        return path, "embedded seed set (selfalign/data/seed_pairs.jsonl)"
    # Stand-in: log-normal word counts roughly like oasst1 first turns (short questions,
    # long-tailed answers).
    rng = random.Random(0)
    words = [
        "the",
        "of",
        "and",
        "to",
        "in",
        "is",
        "that",
        "it",
        "for",
        "on",
        "with",
        "as",
        "was",
        "at",
        "by",
        "an",
        "be",
        "this",
        "from",
        "or",
    ]
    out = directory / "standin_pairs.jsonl"
    with out.open("w") as handle:
        for i in range(200):
            q = int(min(300, rng.lognormvariate(3.0, 0.7)))
            a = int(min(1500, rng.lognormvariate(5.0, 0.8)))
            row = {
                "id": f"s{i}",
                "instruction": " ".join(rng.choices(words, k=max(q, 3))),
                "response": " ".join(rng.choices(words, k=max(a, 3))),
                "source": "seed",
            }
            handle.write(json.dumps(row) + "\n")
    why = "requested" if data == "standin" else "seed set missing"
    return str(out), f"stand-in: 200 synthetic pairs, oasst1-like log-normal lengths ({why})"


def measure(metrics_file: Path) -> dict:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    steps = [r for r in rows if "loss" in r][1:]  # first step: warm-up
    tokens = sum(r["tokens"] for r in steps)
    computed = sum(r["computed_tokens"] for r in steps)
    seconds = sum(r["step_s"] for r in steps)
    return {
        "tokens_per_s": round(tokens / seconds, 2),
        "measured_steps": len(steps),
        "real_tokens": tokens,
        "computed_tokens": computed,
        "padding_overhead": round(computed / tokens, 3),
        "step_s_mean": round(seconds / len(steps), 3),
        "final_loss": steps[-1]["loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument(
        "--steps", type=int, default=6, help="optimizer steps per run (first excluded)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the paper's (8 below 3,000 examples)"
    )
    parser.add_argument(
        "--data",
        choices=["seed", "standin"],
        default="seed",
        help="the embedded seed set, or a long-tailed stand-in",
    )
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import ray

    from selfalign.core.config import build_config
    from selfalign.core.models import resolve_model
    from selfalign.core.resources import load_ray_config
    from selfalign.training.config import TrainConfig
    from selfalign.training.driver import train

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_path = resolve_model(args.model).path
    profile = load_ray_config().profile("local")
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="selfalign-bench-train-") as tmp:
        data, data_note = seed_rows(Path(tmp), args.data)
        for name, packing, stage in RUNS:
            overrides = {
                "chat_format": "seed",
                "model": model_path,
                "input": data,
                "output": f"{tmp}/{name}",
                "packing": packing,
                "max_steps": args.steps,
                "checkpoint_every": 10**6,
                "export": False,
            }
            if args.batch_size:
                overrides["batch_size"] = args.batch_size
            config = build_config(TrainConfig, overrides=overrides)
            run_profile = profile.model_copy(
                update={"train": profile.train.model_copy(update={"zero_stage": stage})}
            )
            started = time.perf_counter()
            summary = train(config, run_profile)
            figures = measure(Path(tmp) / name / "metrics.jsonl")
            figures["wall_s"] = round(time.perf_counter() - started, 1)
            figures.update(packing=packing, zero_stage=stage, batch_size=summary["batch_size"])
            results[name] = figures
            print(name, json.dumps(figures), flush=True)
        examples = summary["examples"]
    ray.shutdown()

    payload = {
        "benchmark": "train",
        "model": args.model,
        "data": data_note,
        "examples": examples,
        "workers": profile.train.num_workers,
        "device": "cpu",
        "steps_per_run": args.steps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "runs": results,
        "ratios": {
            "packing_vs_padding": round(
                results["packing_zero2"]["tokens_per_s"] / results["padding_zero2"]["tokens_per_s"],
                3,
            ),
            "zero3_vs_zero2": round(
                results["packing_zero3"]["tokens_per_s"] / results["packing_zero2"]["tokens_per_s"],
                3,
            ),
        },
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["ratios"]))


if __name__ == "__main__":
    main()
