"""Scoring service throughput and latency: HTTP through Ray Serve vs the same engine in-process.

Same model (embedded SmolLM2-135M-Instruct), same pairs, same engine class, one run:

  (a) inprocess — ``selfalign.serving.runner.ModelRunner`` (the class every Serve replica
                  holds) called directly from an asyncio load generator: no HTTP, no Serve;
  (b) http      — ``selfalign.serving.app.build_app`` on a local Ray cluster (profile
                  ``local``: one replica, 1 CPU reserved, 2 engine threads), called over
                  real HTTP with a bearer token by ``C`` client threads (one keep-alive
                  ``requests.Session`` each).

Each request scores one pair in logprobs mode (the curate stage's default), at 1, 8 and
32 concurrent clients. pairs/s = requests / wall time of the level; latency = per request,
client side (p50/p99, nearest rank). Engine start-ups and a warm-up (which fills each
engine's prefix cache with the shared rubric, as any running service has) are excluded.

Both engines live in one process tree for the whole run and the systems take turns level
by level (``--rounds`` rounds, the order swapped every round), so that a shared machine's
changing background load hits both alike; the Ray cluster stays up during (a)'s turns too.

Pairs: the embedded seed set (``selfalign/data/seed_pairs.jsonl``, 70 real pairs). So that
no turn re-scores a pair its engine already has in the prefix cache, each (level, round)
pairs instruction i with response i+k for its own k (k=0, the real pairs, for the first
32-client round; mismatched pairs, which curation also sees, otherwise). Both systems score
the same pairs; the JSON records the largest difference between their expected scores.

    .venv/bin/python benchmarks/serve.py          # writes benchmarks/results/serve.json
    .venv/bin/python benchmarks/serve.py --requests 16 --rounds 1 --output /tmp/serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL_REF = "embedded:smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
SEED = Path(__file__).resolve().parent.parent / "selfalign" / "data" / "seed_pairs.jsonl"
LEVELS = {1: 1, 8: 2, 32: 0}  # concurrency -> response offset of its first-round pairs
SYSTEMS = ("inprocess", "http")
WARMUP_OFFSET = 3
TOKEN = "bench-token"


def load_pairs(offset: int, count: int) -> list[dict]:
    seed = [json.loads(line) for line in SEED.read_text().splitlines() if line.strip()]
    n = len(seed)
    return [
        {
            "id": f"{i}-{offset}",
            "instruction": seed[i]["instruction"],
            "response": seed[(i + offset) % n]["response"],
        }
        for i in range(min(count, n))
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def summary(latencies: list[float], wall: float, failures: int) -> dict:
    return {
        "requests": len(latencies),
        "failures": failures,
        "wall_s": round(wall, 3),
        "pairs_per_s": round(len(latencies) / wall, 3),
        "latency_p50_s": round(percentile(latencies, 50), 4),
        "latency_p99_s": round(percentile(latencies, 99), 4),
    }


def config():
    from selfalign.serving.config import ServeConfig

    return ServeConfig(model=MODEL_REF, token=TOKEN)


# --------------------------------------------------------------------------- (a) in-process


async def inprocess_level(runner, pairs: list[dict], concurrency: int):
    queue = list(reversed(pairs))
    latencies: list[float] = []
    scores: dict[str, float | None] = {}

    async def worker():
        while queue:
            pair = queue.pop()
            started = time.perf_counter()
            results, _ = await runner.score([pair], "logprobs")
            latencies.append(time.perf_counter() - started)
            scores[pair["id"]] = results[0]["expected_score"]

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, 0, scores


# --------------------------------------------------------------------------- (b) HTTP


def http_level(url: str, pairs: list[dict], concurrency: int):
    import requests

    queue = list(reversed(pairs))
    lock = threading.Lock()
    latencies: list[float] = []
    scores: dict[str, float | None] = {}
    failures = [0]

    def client():
        with requests.Session() as session:
            while True:
                with lock:
                    if not queue:
                        return
                    pair = queue.pop()
                started = time.perf_counter()
                try:
                    got = session.post(
                        url,
                        json={"pairs": [pair]},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=600,
                    )
                except requests.RequestException:
                    with lock:
                        failures[0] += 1  # counted, never silently dropped
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    if got.status_code != 200:
                        failures[0] += 1
                        continue
                    latencies.append(elapsed)
                    scores[pair["id"]] = got.json()["results"][0]["expected_score"]

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, failures[0], scores


# --------------------------------------------------------------------------- driver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per level (<= 70)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()

    import ray
    from ray import serve

    from selfalign.core.cluster import ensure_ray
    from selfalign.core.models import resolve_model
    from selfalign.core.resources import load_ray_config
    from selfalign.serving.app import build_app
    from selfalign.serving.runner import ModelRunner

    resolve_model(MODEL_REF)  # convert once, outside the timed systems
    load_start = os.getloadavg()
    profile = load_ray_config().profile("local")

    started = time.perf_counter()
    ensure_ray(profile)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config()), name="bench", route_prefix="/")
    http_load_s = time.perf_counter() - started
    url = f"http://127.0.0.1:{port}/v1/score"

    # One event loop for the in-process engine: vLLM binds its output handler to it.
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    runner = ModelRunner(config(), resources=profile.serve)  # as a replica builds it
    inprocess_load_s = time.perf_counter() - started

    warm = load_pairs(WARMUP_OFFSET, args.warmup)
    loop.run_until_complete(inprocess_level(runner, warm, 8))
    http_level(url, warm, 8)

    offsets = iter(range(4, 100))
    raw = {s: {c: {"lat": [], "wall": 0.0, "fail": 0} for c in LEVELS} for s in SYSTEMS}
    scores: dict[str, dict] = {s: {} for s in SYSTEMS}
    for round_index in range(args.rounds):
        for concurrency in LEVELS:
            offset = LEVELS[concurrency] if round_index == 0 else next(offsets)
            pairs = load_pairs(offset, args.requests)
            order = SYSTEMS if round_index % 2 == 0 else SYSTEMS[::-1]
            for system in order:
                if system == "inprocess":
                    got = loop.run_until_complete(inprocess_level(runner, pairs, concurrency))
                else:
                    got = http_level(url, pairs, concurrency)
                latencies, wall, failures, level_scores = got
                raw[system][concurrency]["lat"] += latencies
                raw[system][concurrency]["wall"] += wall
                raw[system][concurrency]["fail"] += failures
                scores[system].update(level_scores)
                print(
                    f"[serve bench] round {round_index} c={concurrency:>2} {system:>9}: "
                    f"{len(latencies) / wall:.2f} pairs/s",
                    flush=True,
                )
    runner.shutdown()
    # vLLM's own finaliser would run again at interpreter exit, when its globals are gone.
    del runner
    gc.collect()
    loop.close()
    serve.shutdown()
    ray.shutdown()

    levels = {
        system: {
            str(c): summary(raw[system][c]["lat"], raw[system][c]["wall"], raw[system][c]["fail"])
            for c in LEVELS
        }
        for system in SYSTEMS
    }
    common = set(scores["inprocess"]) & set(scores["http"])
    diffs = [
        abs(scores["inprocess"][k] - scores["http"][k])
        for k in common
        if scores["inprocess"][k] is not None and scores["http"][k] is not None
    ]
    ratios = {
        f"http{c}_vs_inprocess": round(
            levels["http"][str(c)]["pairs_per_s"] / levels["inprocess"][str(c)]["pairs_per_s"], 3
        )
        for c in LEVELS
    }
    report = {
        "benchmark": "serve",
        "model": MODEL_REF,
        "pairs": "embedded seed set; each (level, round) pairs instruction i with response i+k",
        "requests_per_level_per_round": args.requests,
        "rounds": args.rounds,
        "pairs_per_request": 1,
        "mode": "logprobs",
        "load_s": {"inprocess": round(inprocess_load_s, 2), "http": round(http_load_s, 2)},
        "systems": levels,
        "ratios": ratios,
        "agreement": {
            "pairs_compared": len(diffs),
            "max_abs_expected_score_diff": max(diffs) if diffs else None,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load_start],
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "systems": levels}, indent=2))


if __name__ == "__main__":
    main()
