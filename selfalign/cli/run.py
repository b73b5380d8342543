"""``selfalign run <recipe>``: a whole recipe (e.g. the Humback loop) as one resumable pipeline.

Examples::

    selfalign run humback --config jobs/configs/humback_demo.yaml           # the embedded demo
    selfalign run humback --config jobs/configs/humback_demo.yaml --status  # what is done
    selfalign run humback --config jobs/configs/humback_7b_gpu.yaml --profile gpu \\
        run_dir=s3://bucket/runs/humback-7b
    ray job submit --working-dir . -- python jobs/run.py humback --config jobs/configs/humback_7b_gpu.yaml

Every step's output lives under the run directory; rerunning the same command skips the
finished steps and resumes the interrupted one (``--status`` shows which). The run
report (``report.html``, readable offline, and ``report.json``) is written at the end.
The recipes are listed in ``selfalign.recipes.RECIPES``.
"""

from __future__ import annotations

import argparse
import json
import sys

from selfalign.cli.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.recipes import RECIPES, get_recipe


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign run", description=__doc__)
    parser.add_argument("recipe", choices=sorted(RECIPES), help="the pipeline to run")
    parser.add_argument("--run-dir", help="where every step writes (local path or URI)")
    parser.add_argument("--model", help="base model (default: embedded:smollm2-135m-instruct)")
    parser.add_argument(
        "--iterations", type=int, help="rounds of the recipe's loop (recipes that have one)"
    )
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


def main(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.recipe)
    setup_logging()
    overrides = flag_overrides(
        args, {"run_dir": "run_dir", "model": "model", "iterations": "iterations"}
    )
    config = build_config(recipe.config_type, args.config, overrides)
    steps = recipe.plan(config)  # validates every step's settings before anything runs
    if args.status:
        from selfalign.pipeline.runner import step_status

        for row in step_status(config.run_dir, steps):
            print(f"{row['status']:<12} {row['step']:<16} {row['description']}")
        return 0
    if args.report_only:
        from selfalign.pipeline.report import write_report

        summary = write_report(recipe, config, steps)
    else:
        from selfalign.pipeline.runner import run_pipeline

        def progress(message: str) -> None:
            print(f"[{recipe.name}] {message}", file=sys.stderr, flush=True)

        summary = run_pipeline(recipe, config, overwrite=args.overwrite, progress=progress)
    print(json.dumps(summary, indent=2))
    print(f"Report: {summary['report']}", file=sys.stderr)
    return 0
