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
import functools
import json

from selfalign.commands.common import (
    STAGE_FLAGS,
    add_stage_arguments,
    flag_overrides,
    run_engine_stage,
    setup_logging,
)
from selfalign.config import BacktranslateConfig, build_config


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign backtranslate", description=__doc__)
    add_stage_arguments(parser, "segment rows")
    return parser


def _to_request(row, *, text_column: str):
    from selfalign.backtranslation import safe_request_row

    if text_column != "text":
        row = {**row, "text": row.get(text_column)}
    return safe_request_row(row)


def _to_result(row):
    from selfalign.backtranslation import finish_row

    return finish_row(row)


def run(config: BacktranslateConfig, *, overwrite: bool = False) -> dict:
    return run_engine_stage(
        "backtranslate",
        config,
        operation="generate",
        to_requests=functools.partial(_to_request, text_column=config.text_column),
        to_results=_to_result,
        overwrite=overwrite,
    )


def main(args: argparse.Namespace) -> int:
    setup_logging()
    config = build_config(BacktranslateConfig, args.config, flag_overrides(args, STAGE_FLAGS))
    manifest = run(config, overwrite=args.overwrite)
    print(json.dumps(manifest, indent=2))
    return 0
