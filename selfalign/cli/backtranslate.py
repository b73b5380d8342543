"""``selfalign backtranslate``: the backward model writes one instruction per web segment.

Input: segment rows (``id``, ``text``, ...; e.g. ``selfalign ingest corpus`` output).
Output: ``data/`` with one candidate pair per segment (``instruction``, ``response``,
``source="augmented"``, ``raw_instruction``, ``reject_reason``), ``rejects/`` and
``_manifest.json``. Killing the job and rerunning the same command resumes it; a
completed run is skipped.

    selfalign backtranslate --input runs/corpus/segments --output runs/A --model runs/m_yx
"""

from __future__ import annotations

import argparse
import json

from selfalign.cli.common import STAGE_FLAGS, add_stage_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.stages.backtranslate.config import BacktranslateConfig


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign backtranslate", description=__doc__)
    add_stage_arguments(parser, "segment rows")
    return parser


def main(args: argparse.Namespace) -> int:
    from selfalign.stages.backtranslate.stage import run

    setup_logging()
    config = build_config(BacktranslateConfig, args.config, flag_overrides(args, STAGE_FLAGS))
    print(json.dumps(run(config, overwrite=args.overwrite), indent=2))
    return 0
