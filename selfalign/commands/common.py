"""Arguments and set-up shared by the commands."""

from __future__ import annotations

import argparse
import logging
import sys

from selfalign.config import ConfigError


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


def flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """Turn explicitly given flags into dotted overrides (flags win over the YAML file)."""
    out = []
    for attr, key in mapping.items():
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


STAGE_FLAGS = {
    "input": "input",
    "output": "output",
    "model": "model",
    "limit": "limit",
    "profile": "profile",
    "ray_config": "ray_config",
    "ray_address": "ray_address",
}


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


def run_engine_stage(
    name: str,
    config,
    *,
    operation: str,
    to_requests,
    to_results,
    overwrite: bool,
    skip_rejected_input: bool = False,
):
    """Shared runner of the resumable engine stages: read, request, engine, finish, write.

    ``to_requests``/``to_results`` are the stage's pure per-row functions. With
    ``skip_rejected_input``, input rows that carry a ``reject_reason`` (rejected by the
    previous stage, and recorded in its ``rejects/``) are not processed again.
    """
    from selfalign.config import load_ray_config
    from selfalign.models import resolve_model
    from selfalign.runtime import io
    from selfalign.runtime.cluster import ensure_ray
    from selfalign.runtime.engine import EngineSpec, run_engine
    from selfalign.runtime.stage import check_resumable, fixed_input, run_stage

    if not config.input:
        raise ConfigError(f"selfalign {name}: --input is required")
    config = config.model_copy(update={"output": io.absolute(config.output)})
    ignore = ("output", "ray_address", "profile", "ray_config", "selection")
    check_resumable(config.output, config, overwrite=overwrite, fingerprint_ignore=ignore)
    profile = load_ray_config(config.ray_config).profile(config.profile)
    model = resolve_model(config.model)
    ensure_ray(profile, config.ray_address)
    spec = EngineSpec(
        model_path=model.path,
        resources=profile.stage(name),
        vllm=config.vllm,
        sampling=config.sampling,
        device=profile.device,
        operation=operation,
        logprobs_top_k=getattr(config, "logprobs_top_k", 20),
    )

    def transform(rows):
        return run_engine(rows.map(to_requests), spec).map(to_results)

    if overwrite:
        io.clear_output(config.output)
    rows = fixed_input(config.input, config.output, config.limit)
    if skip_rejected_input and "reject_reason" in rows.schema().names:
        rows = rows.filter(lambda row: row["reject_reason"] is None)
    return run_stage(
        name,
        rows,
        transform,
        config.output,
        config,
        id_column=config.id_column,
        overwrite=overwrite,
        fingerprint_ignore=ignore,
    )
