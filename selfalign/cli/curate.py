"""``selfalign curate``: the current model rates each (instruction, response) pair 1-5.

Input: pair rows (``id``, ``instruction``, ``response``; e.g. backtranslate's ``data/``:
rows it rejected are skipped). Output: ``data/`` with ``score``, ``expected_score``,
``score_probs`` (logprobs mode), ``curation_output`` (generate mode), ``reject_reason``;
``rejects/``; ``selected/`` (the pairs that pass the selection); ``_manifest.json``.
Resumable like every stage; changing only the selection re-selects without rescoring.

    selfalign curate --input runs/A/data --output runs/A_scored_m0 --model runs/m0 \\
        selection.min_expected=4.5
"""

from __future__ import annotations

import argparse
import json

from selfalign.cli.common import STAGE_FLAGS, add_stage_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.stages.curate.config import CurateConfig


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign curate", description=__doc__)
    add_stage_arguments(parser, "pair rows")
    parser.add_argument("--mode", choices=["logprobs", "generate"], help="scoring mode")
    return parser


def main(args: argparse.Namespace) -> int:
    from selfalign.stages.curate.stage import run

    setup_logging()
    overrides = flag_overrides(args, {**STAGE_FLAGS, "mode": "mode"})
    config = build_config(CurateConfig, args.config, overrides)
    print(json.dumps(run(config, overwrite=args.overwrite), indent=2))
    return 0
