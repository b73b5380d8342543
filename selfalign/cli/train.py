"""``selfalign train``: fine-tune a model on Ray Train + DeepSpeed (backward, seed or curated format).

Examples::

    selfalign train --chat-format backward --input seed.jsonl --output runs/backward
    selfalign train --config jobs/configs/train_curated.yaml --input runs/curated/ --output runs/m1
    ray job submit --working-dir . -- python jobs/train.py --chat-format seed --profile gpu \\
        --model meta-llama/Llama-2-7b-hf --input s3://bucket/seed/ --output s3://bucket/m0

Workers, CPUs/GPUs and the ZeRO stage come from the ``train`` section of the profile in
``ray_config.yaml``. Outputs: ``<output>/model`` (Hugging Face safetensors directory,
tokenizer and chat template included), ``<output>/metrics.jsonl`` (one row per step),
``<output>/checkpoints/`` (Ray Train), ``<output>/train-summary.json``, the resolved
config ``<output>/_selfalign_config.yaml`` and the claim ``<output>/_manifest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from selfalign.cli.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.formats.conversations import CHAT_FORMATS
from selfalign.training.config import TrainConfig


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign train", description=__doc__)
    parser.add_argument(
        "--chat-format",
        choices=CHAT_FORMATS,
        help="backward (response -> instruction), seed (M0) or curated (seed + curated pairs "
        "with source tags)",
    )
    # The flag's old name, from before "recipe" meant a whole pipeline (selfalign run).
    parser.add_argument("--recipe", choices=CHAT_FORMATS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--input",
        help="training rows: JSONL/Parquet file, directory or glob (default: embedded seed pairs)",
    )
    parser.add_argument("--output", help="run directory (default: runs/train)")
    parser.add_argument(
        "--model", help="base model reference (default: embedded:smollm2-135m-instruct)"
    )
    parser.add_argument(
        "--max-steps", type=int, help="optimizer steps (default: the paper's table by data size)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="examples per optimizer step (default: 32, or 8 below 3,000 examples)",
    )
    parser.add_argument("--limit", type=int, help="train on the first N rows only")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="clear an output that holds another run (default: resume this run)",
    )
    parser.add_argument(
        "--no-packing",
        dest="packing",
        action="store_const",
        const=False,
        help="pad per example instead of packing",
    )
    add_config_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    if args.recipe is not None:
        print("selfalign train: --recipe is now --chat-format", file=sys.stderr)
        args.chat_format = args.chat_format or args.recipe
    overrides = flag_overrides(
        args,
        {
            "chat_format": "chat_format",
            "input": "input",
            "output": "output",
            "model": "model",
            "max_steps": "max_steps",
            "batch_size": "batch_size",
            "limit": "limit",
            "packing": "packing",
        },
    )
    return build_config(TrainConfig, args.config, overrides)


def main(args: argparse.Namespace) -> int:
    from selfalign.core.resources import load_ray_config
    from selfalign.training.driver import train

    setup_logging()
    config = resolve_config(args)
    profile = load_ray_config(config.ray_config).profile(config.profile)
    summary = train(config, profile, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2))
    return 0
