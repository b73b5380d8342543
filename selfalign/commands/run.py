"""``selfalign run humback``: the whole self-alignment loop, M_yx -> A -> M0 -> A(1) -> M1 -> ... -> M2.

Examples::

    selfalign run humback --config jobs/configs/humback_demo.yaml           # the embedded demo
    selfalign run humback --config jobs/configs/humback_demo.yaml --status  # what is done
    selfalign run humback --config jobs/configs/humback_7b_gpu.yaml --profile gpu \\
        run_dir=s3://bucket/runs/humback-7b
    ray job submit --working-dir . -- python jobs/humback.py --config jobs/configs/humback_7b_gpu.yaml

Every step's output lives under the run directory; rerunning the same command skips the
finished steps and resumes the interrupted one (``--status`` shows which). The run
report (``report.html``, readable offline, and ``report.json``) is written at the end.
"""

from __future__ import annotations

import argparse
import json
import sys

from selfalign.commands.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.config import build_config
from selfalign.humback import HumbackConfig

RECIPES = ("humback",)


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign run", description=__doc__)
    parser.add_argument("recipe", choices=RECIPES, help="the pipeline to run")
    parser.add_argument("--run-dir", help="where every step writes (local path or URI)")
    parser.add_argument("--model", help="base model (default: embedded:smollm2-135m-instruct)")
    parser.add_argument("--iterations", type=int, help="curate-and-train rounds after M0")
    parser.add_argument(
        "--overwrite", action="store_true", help="clear the run directory and start over"
    )
    parser.add_argument(
        "--status", action="store_true", help="print each step's status and exit (runs nothing)"
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild report.html/report.json from what the run directory holds",
    )
    add_config_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> HumbackConfig:
    overrides = flag_overrides(
        args,
        {
            "run_dir": "run_dir",
            "model": "model",
            "iterations": "iterations",
            "profile": "profile",
            "ray_config": "ray_config",
            "ray_address": "ray_address",
        },
    )
    return build_config(HumbackConfig, args.config, overrides)


def _progress(message: str) -> None:
    print(f"[humback] {message}", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from selfalign.humback import plan

    setup_logging()
    config = resolve_config(args)
    plan(config)  # validates every step's settings before anything runs
    if args.status:
        from selfalign.runtime.loop import step_status

        for row in step_status(config):
            print(f"{row['status']:<12} {row['step']:<16} {row['description']}")
        return 0
    if args.report_only:
        from selfalign.runtime.report import write_report

        summary = write_report(config, plan(config))
    else:
        from selfalign.runtime.loop import run_humback

        summary = run_humback(config, overwrite=args.overwrite, progress=_progress)
    print(json.dumps(summary, indent=2))
    print(f"Report: {summary['report']}", file=sys.stderr)
    return 0
