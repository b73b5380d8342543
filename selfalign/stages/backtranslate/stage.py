"""The backtranslate stage: segment rows -> one candidate pair per segment, resumably.

Input: segment rows (``id``, ``text``, ...; e.g. ``selfalign ingest corpus`` output).
Output: ``data/`` with one candidate pair per segment (``instruction``, ``response``,
``source="augmented"``, ``raw_instruction``, ``reject_reason``), ``rejects/`` and
``_manifest.json``.
"""

from __future__ import annotations

import functools

from selfalign.engine.runner import EngineStage, run_engine_stage
from selfalign.stages.backtranslate import rows
from selfalign.stages.backtranslate.config import BacktranslateConfig


def _to_request(row, *, text_column: str):
    if text_column != "text":
        row = {**row, "text": row.get(text_column)}
    return rows.safe_request_row(row)


def run(config: BacktranslateConfig, *, overwrite: bool = False) -> dict:
    return run_engine_stage(
        EngineStage(
            name="backtranslate",
            config=config,
            operation="generate",
            to_request=functools.partial(_to_request, text_column=config.text_column),
            to_result=rows.finish_row,
        ),
        overwrite=overwrite,
    )
