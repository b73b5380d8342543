"""``selfalign generate``: stream rows through the vLLM engine on Ray Data, write Parquet.

Example::

    selfalign generate --input prompts.jsonl --output runs/gen sampling.max_tokens=64
    ray job submit --working-dir . -- python jobs/generate.py --input s3://bucket/rows/ --output s3://bucket/out --profile gpu
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import resources

from selfalign.commands.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.config import (
    RESOLVED_CONFIG_NAME,
    GenerateConfig,
    build_config,
    config_to_yaml,
    load_ray_config,
)

SUMMARY_NAME = "_selfalign_summary.json"


def sample_prompts_path() -> str:
    """The embedded sample prompts used when no ``--input`` is given."""
    return str(resources.files("selfalign") / "data" / "sample_prompts.jsonl")


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign generate", description=__doc__)
    parser.add_argument(
        "--input",
        help="rows: JSONL/Parquet file, directory or glob, any filesystem (default: embedded sample prompts)",
    )
    parser.add_argument(
        "--output", help="output directory for Parquet shards (default: runs/generate)"
    )
    parser.add_argument("--model", help="model reference (default: embedded:smollm2-135m-instruct)")
    parser.add_argument(
        "--operation",
        choices=["generate", "logprobs"],
        help="generate text, or top-k next-token log-probabilities",
    )
    parser.add_argument("--limit", type=int, help="process only the first N rows")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output shards")
    parser.add_argument("--show", type=int, default=3, help="print this many results at the end")
    add_config_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> GenerateConfig:
    overrides = flag_overrides(
        args,
        {
            "input": "input",
            "output": "output",
            "model": "model",
            "operation": "operation",
            "limit": "limit",
            "profile": "profile",
            "ray_config": "ray_config",
            "ray_address": "ray_address",
        },
    )
    return build_config(GenerateConfig, args.config, overrides)


def run(config: GenerateConfig, *, overwrite: bool = False) -> dict:
    """Run the generate job; returns its summary (also written beside the output)."""
    from selfalign.models import resolve_model
    from selfalign.runtime import io
    from selfalign.runtime.cluster import ensure_ray
    from selfalign.runtime.engine import EngineSpec, run_engine

    profile = load_ray_config(config.ray_config).profile(config.profile)
    existing = io.list_output_files(config.output)
    if existing and not overwrite:
        raise SystemExit(
            f"{config.output} already holds {len(existing)} Parquet shard(s); "
            "pass --overwrite to replace them or choose another --output"
        )
    if existing:
        io.clear_output(config.output)

    model = resolve_model(config.model)
    ensure_ray(profile, config.ray_address)
    io.write_text(f"{config.output.rstrip('/')}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    spec = EngineSpec(
        model_path=model.path,
        resources=profile.stage("generate"),
        vllm=config.vllm,
        sampling=config.sampling,
        device=profile.device,
        operation=config.operation,
        logprobs_top_k=config.logprobs_top_k,
    )
    rows = io.read_rows(config.input or sample_prompts_path(), limit=config.limit)
    started = time.perf_counter()
    run_engine(rows, spec).write_parquet(config.output)
    elapsed = time.perf_counter() - started
    summary = summarize(config.output, elapsed)
    summary["model"] = config.model
    io.write_json(f"{config.output.rstrip('/')}/{SUMMARY_NAME}", summary)
    return summary


def summarize(output: str, elapsed_s: float) -> dict:
    """Counts read back from the written shards: rows in = rows ok + rows with an error."""
    import pyarrow.dataset as pads

    from selfalign.runtime.io import filesystem_for

    filesystem, path = filesystem_for(output)
    table = pads.dataset(path, filesystem=filesystem, format="parquet").to_table(
        columns=["error", "num_generated_tokens"]
    )
    errors = table.column("error").drop_null()
    tokens = sum(v for v in table.column("num_generated_tokens").to_pylist() if v)
    return {
        "rows": table.num_rows,
        "ok": table.num_rows - len(errors),
        "errors": len(errors),
        "output_tokens": tokens,
        "elapsed_s": round(elapsed_s, 2),
        "output_tokens_per_s": round(tokens / elapsed_s, 2) if elapsed_s else None,
        "output": output,
    }


def show_results(output: str, count: int) -> None:
    import pyarrow.dataset as pads

    from selfalign.runtime.io import filesystem_for

    if count <= 0:
        return
    filesystem, path = filesystem_for(output)
    table = pads.dataset(path, filesystem=filesystem, format="parquet").head(count)
    for row in table.to_pylist():
        question = row.get("prompt") or (row.get("messages") or [{}])[-1].get("content", "")
        print("-" * 72)
        print(f"> {str(question)[:300]}")
        if row.get("error"):
            print(f"! error: {row['error']}")
        elif row.get("top_logprobs") is not None:
            print(
                "  "
                + ", ".join(f"{e['token']!r}: {e['logprob']:.2f}" for e in row["top_logprobs"][:5])
            )
        else:
            print(row.get("generated_text"))
    print("-" * 72)


def main(args: argparse.Namespace) -> int:
    setup_logging()
    config = resolve_config(args)
    summary = run(config, overwrite=args.overwrite)
    show_results(config.output, args.show)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] > 0 or summary["rows"] == 0 else 1
