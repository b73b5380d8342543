"""``selfalign backtranslate`` settings (pure)."""

from __future__ import annotations

from pydantic import Field

from selfalign.engine.config import SamplingSettings, StageJobConfig


class BacktranslateConfig(StageJobConfig):
    """``selfalign backtranslate``: the backward model writes one instruction per segment."""

    output: str = "runs/backtranslate"
    text_column: str = Field("text", description="Segment text column of the input.")
    # The paper's self-augmentation sampling: temperature 0.7, top-p 0.9.
    sampling: SamplingSettings = SamplingSettings(temperature=0.7, top_p=0.9, max_tokens=96)
