"""Arguments and set-up shared by the commands."""

from __future__ import annotations

import argparse
import logging
import sys


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML job config; flags and overrides apply on top.")
    parser.add_argument("--profile", help="resource profile in ray_config.yaml (default: local).")
    parser.add_argument(
        "--ray-config", help="path to ray_config.yaml (default: ./ray_config.yaml)."
    )
    parser.add_argument(
        "--ray-address", help="Ray cluster to join (default: RAY_ADDRESS or a local one)."
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides in dotted form, e.g. sampling.max_tokens=64 vllm.dtype=float32",
    )


# Every command takes these (add_config_arguments), and every config has them (Placement).
PLACEMENT_FLAGS = {"profile": "profile", "ray_config": "ray_config", "ray_address": "ray_address"}


def flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """Turn explicitly given flags into dotted overrides (flags win over the YAML file);
    the placement flags are always included."""
    out = []
    for attr, key in {**mapping, **PLACEMENT_FLAGS}.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out + list(args.overrides or [])


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


STAGE_FLAGS = {"input": "input", "output": "output", "model": "model", "limit": "limit"}


def add_stage_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--input", help=f"{what}: JSONL/Parquet file, directory or glob, any filesystem"
    )
    parser.add_argument("--output", help="stage output directory (data/, rejects/, _manifest.json)")
    parser.add_argument("--model", help="model reference (default: embedded:smollm2-135m-instruct)")
    parser.add_argument("--limit", type=int, help="process only the first N input rows")
    parser.add_argument(
        "--overwrite", action="store_true", help="discard an existing output instead of resuming"
    )
    add_config_arguments(parser)
