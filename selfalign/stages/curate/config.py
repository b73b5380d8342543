"""``selfalign curate`` settings (pure)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from selfalign.core.config import Strict
from selfalign.engine.config import SamplingSettings, StageJobConfig
from selfalign.formats.conversations import ScorerFormat


class SelectionSettings(Strict):
    """Which scored pairs are kept. Thresholds combine; ``top_n`` applies after them."""

    min_score: int | None = Field(
        5, ge=1, le=5, description="Keep pairs whose (argmax) score >= this; the paper's A5 = 5."
    )
    min_expected: float | None = Field(
        None, ge=1, le=5, description="Keep pairs whose expected score >= this (e.g. 4.5)."
    )
    top_n: int | None = Field(None, ge=1, description="Then keep the N best by expected score.")


class CurateConfig(StageJobConfig):
    """``selfalign curate``: the current model rates each pair on the 5-point rubric."""

    output: str = "runs/curate"
    mode: Literal["logprobs", "generate"] = Field(
        "logprobs",
        description="logprobs: read P('1'..'5') after 'Score:' (never unparseable); "
        "generate: reasoning then 'Score: N', parsed.",
    )
    scorer_format: ScorerFormat = Field(
        "seed",
        description="The chat format the scoring model was trained with (seed: M0 or a base "
        "instruct model; curated: M1+, source-tagged), so it is prompted as it was trained.",
    )
    logprobs_top_k: int = Field(20, ge=5, le=100)
    score_prefix: str | None = Field(
        None,
        description="logprobs mode: the reply pre-fill before the digit; None = detect from "
        "the scorer's tokenizer ('Score: ' when the space is its own token, else 'Score:').",
    )
    sampling: SamplingSettings = SamplingSettings(temperature=0.0, max_tokens=256)
    selection: SelectionSettings = SelectionSettings()

    # A new selection re-selects from the scored rows; it needs no rescoring.
    resume_ignore: ClassVar[frozenset[str]] = StageJobConfig.resume_ignore | {"selection"}
