"""The curate stage: pair rows -> scored pairs (``score``, ``expected_score``...), resumably,
then the selection (``select``). Changing only the selection re-selects without rescoring.
"""

from __future__ import annotations

import functools

from selfalign.engine.runner import EngineStage, run_engine_stage
from selfalign.stages.curate import rows
from selfalign.stages.curate.config import CurateConfig
from selfalign.stages.curate.select import select


def detect_score_prefix(model_ref: str) -> str:
    """Ask the scorer's own tokenizer where the score digit starts (see score_prefix_for)."""
    from transformers import AutoTokenizer

    from selfalign.core.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_ref).path)
    ids = tokenizer.encode("Score: 3", add_special_tokens=False)
    return rows.score_prefix_for([tokenizer.decode([i]) for i in ids])


def run(config: CurateConfig, *, overwrite: bool = False) -> dict:
    if config.mode == "logprobs" and config.score_prefix is None:
        # Resolved before the stage runs, so the saved config says what was used.
        config = config.model_copy(update={"score_prefix": detect_score_prefix(config.model)})
    manifest = run_engine_stage(
        EngineStage(
            name="curate",
            config=config,
            operation=config.mode,
            to_request=functools.partial(
                rows.request_row,
                mode=config.mode,
                scorer_format=config.scorer_format,
                score_prefix=config.score_prefix or rows.SCORE_PREFIX,
            ),
            to_result=functools.partial(rows.finish_row, mode=config.mode),
            logprobs_top_k=config.logprobs_top_k,
            skip_rejected_input=True,
        ),
        overwrite=overwrite,
    )
    return {**manifest, **select(config.output, config.selection)}
