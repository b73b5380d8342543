"""Benchmark ``selfalign ingest corpus``: documents/s and peak memory at 5k vs 20k documents.

    .venv/bin/python benchmarks/ingest.py                 # 5k and 20k documents
    .venv/bin/python benchmarks/ingest.py --sizes 2000 8000 --workdir /tmp/bench

The corpus is generated: WARC.gz shards (the Common Crawl layout) of 500 HTML pages each, with
navigation, scripts, footers and three headed sections per page; 5% of the pages are exact
copies of another page under a new URL and 5% near copies (a few words changed). Each size
runs the real pipeline (read + segment + filter + dedup + writes) in a fresh process with its
own local Ray cluster, while a sampler adds up the resident memory of the driver and every
process it started (raylet, GCS, workers) every 0.25 s. Writes
``benchmarks/results/ingest.json`` with ``"ratios": {"memory_20k_vs_5k": ...}``; the
streaming design should keep that ratio near 1 (at most 1.3).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARD_DOCS = 500


def generate(workdir: Path, documents: int) -> Path:
    from tests.ingest_helpers import html_page, warc_bytes

    corpus = workdir / "corpus"
    marker = corpus / f".complete-{documents}"
    if marker.exists():
        return corpus
    corpus.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2024)
    pages: list[tuple[str, str]] = []
    shard = 0
    for n in range(documents):
        roll = rng.random()
        if pages and roll < 0.05:
            html = rng.choice(pages)[1]  # exact copy under another URL
        elif pages and roll < 0.10:
            html = rng.choice(pages)[1].replace("The ", "A ", 3)  # near copy
        else:
            html = html_page(random.Random(n), sections=3, title=f"Notes on topic {n}")
        pages.append((f"https://bench.example/{n}", html))
        if len(pages) == SHARD_DOCS:
            (corpus / f"part-{shard:05d}.warc.gz").write_bytes(warc_bytes(pages))
            shard += 1
            pages = []
    if pages:
        (corpus / f"part-{shard:05d}.warc.gz").write_bytes(warc_bytes(pages))
    marker.touch()
    return corpus


class MemorySampler:
    """Peak of the summed RSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.25):
        import psutil

        self._root = psutil.Process()
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for proc in [self._root, *self._root.children(recursive=True)]:
            # A worker may exit between listing and reading.
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self._interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_one(corpus: Path, documents: int, output: Path) -> dict:
    """One size in this process: start Ray, run the pipeline, report time and memory."""
    import ray

    from selfalign.core.config import build_config
    from selfalign.stages.ingest import pipeline as ingest
    from selfalign.stages.ingest.config import CorpusIngestConfig

    shards = sorted(corpus.glob("part-*.warc.gz"))[: -(-documents // SHARD_DOCS)]
    with MemorySampler() as sampler:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        idle = sampler._sample()
        config = build_config(
            CorpusIngestConfig, None, {"inputs": [str(p) for p in shards], "output": str(output)}
        )
        sources, filesystems = ingest.expand_sources(config.inputs)
        started = time.perf_counter()
        stats = ingest.run_corpus(config, sources, filesystems)
        elapsed = time.perf_counter() - started
        ray.shutdown()
    return {
        "documents_in": stats["documents_in"],
        "segments": stats["segments"],
        "segments_out": stats["segments_out"],
        "dropped": stats["dropped"]["by_reason"],
        "rejects": stats["rejects"]["by_reason"],
        "balance_ok": stats["balance"]["ok"],
        "elapsed_s": round(elapsed, 1),
        "staging_s": stats["staging_s"],
        "documents_per_s": round(stats["documents_in"] / elapsed, 1),
        "documents_per_s_read_segment_filter": round(stats["documents_in"] / stats["staging_s"], 1),
        "peak_rss_mib": round(sampler.peak / 2**20, 1),
        "idle_cluster_rss_mib": round(idle / 2**20, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[5000, 20000], metavar=("SMALL", "LARGE")
    )
    parser.add_argument("--workdir", default="/tmp/selfalign-bench-ingest")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ingest.json"))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size
    args = parser.parse_args()
    workdir = Path(args.workdir)

    if args.one:
        result = run_one(workdir / "corpus", args.one, workdir / f"out-{args.one}")
        print("RESULT " + json.dumps(result))
        return 0

    small, large = args.sizes
    started = time.perf_counter()
    generate(workdir, large)
    generated_s = time.perf_counter() - started
    results = {}
    for size in (small, large):
        # A fresh process (and Ray cluster) per size, so one run's memory does not linger.
        proc = subprocess.run(
            [sys.executable, __file__, "--workdir", str(workdir), "--one", str(size)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
            return 1
        results[str(size)] = json.loads(line[len("RESULT ") :])
        print(f"{size} documents: {results[str(size)]}")
    payload = {
        "benchmark": "ingest corpus: read + segment + filter + dedup + write (generated WARC.gz)",
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, Ray local cluster num_cpus=4",
        "generate_s": round(generated_s, 1),
        "runs": results,
        "ratios": {
            "memory_20k_vs_5k": round(
                results[str(large)]["peak_rss_mib"] / results[str(small)]["peak_rss_mib"], 3
            ),
            "documents_per_s_20k_vs_5k": round(
                results[str(large)]["documents_per_s"] / results[str(small)]["documents_per_s"], 3
            ),
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
