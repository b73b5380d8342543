"""``selfalign generate``: stream rows through the vLLM engine on Ray Data, write Parquet.

Example::

    selfalign generate --input prompts.jsonl --output runs/gen sampling.max_tokens=64
    ray job submit --working-dir . -- python jobs/generate.py --input s3://bucket/rows/ --output s3://bucket/out --profile gpu
"""

from __future__ import annotations

import argparse
import json

from selfalign.cli.common import STAGE_FLAGS, add_config_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.stages.generate.config import GenerateConfig


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
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an output that holds another run"
    )
    parser.add_argument("--show", type=int, default=3, help="print this many results at the end")
    add_config_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> GenerateConfig:
    overrides = flag_overrides(args, {**STAGE_FLAGS, "operation": "operation"})
    return build_config(GenerateConfig, args.config, overrides)


def show_results(output: str, count: int) -> None:
    from selfalign.core.io import parquet_dataset

    if count <= 0:
        return
    for row in parquet_dataset(output).head(count).to_pylist():
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
    from selfalign.stages.generate.stage import run

    setup_logging()
    config = resolve_config(args)
    summary = run(config, overwrite=args.overwrite)
    show_results(config.output, args.show)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] > 0 or summary["rows"] == 0 else 1
