"""``selfalign run humback`` settings: one section per stage, the loop's own knobs (pure).

Sections ``seed``, ``corpus``, ``backtranslate``, ``curate`` and ``train.{common,
backward,seed,curated}`` take the settings of the matching command; the paths, models
and chat formats between steps are set by the plan (setting them there is an error).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from selfalign.core.config import Strict
from selfalign.pipeline.recipe import RecipeConfig


class HeldoutSettings(Strict):
    """Human-written seed pairs kept out of every training set, for the held-out loss."""

    size: int = Field(
        10, ge=1, description="Seed pairs held out (chosen by a seeded hash of their ids)."
    )
    seed: int = Field(0, description="Changes which pairs are held out.")


class TrainSections(Strict):
    """``selfalign train`` settings per model (any TrainConfig field but the planned ones)."""

    common: dict[str, Any] = Field(default_factory=dict, description="Applied to every model.")
    backward: dict[str, Any] = Field(default_factory=dict, description="M_yx only.")
    seed: dict[str, Any] = Field(default_factory=dict, description="M0 only.")
    curated: dict[str, Any] = Field(
        default_factory=dict, description="M1, M2, ... and the ablation."
    )


class EvaluationSettings(Strict):
    """What is measured after each model."""

    prompts: list[str] | None = Field(
        None,
        description="Fixed prompts for sample generations; default: selfalign/data/eval_prompts.jsonl.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens per sample generation.")
    max_seq_len: int = Field(2048, ge=16, description="Held-out pairs are truncated to this.")
    base: bool = Field(True, description="Also evaluate the untouched base model.")


class HumbackConfig(RecipeConfig):
    """``selfalign run humback``: the whole self-alignment loop in one run directory."""

    run_dir: str = Field("runs/humback", description="Every step's output lives under here.")
    iterations: int = Field(
        2, ge=1, le=8, description="Curate-and-train rounds after M0: 2 gives M1 and M2."
    )

    seed: dict[str, Any] = Field(
        default_factory=dict, description="`selfalign ingest seed` settings (SeedIngestConfig)."
    )
    corpus: dict[str, Any] = Field(
        default_factory=dict,
        description="`selfalign ingest corpus` settings (CorpusIngestConfig).",
    )
    heldout: HeldoutSettings = HeldoutSettings()
    segments_limit: int | None = Field(
        None, ge=1, description="Backtranslate only the first N segments (demos, smoke runs)."
    )
    backtranslate: dict[str, Any] = Field(
        default_factory=dict, description="`selfalign backtranslate` settings."
    )
    curate: dict[str, Any] = Field(
        default_factory=dict,
        description="`selfalign curate` settings (mode, selection, vllm, sampling).",
    )
    train: TrainSections = TrainSections()
    ablation: bool = Field(
        True,
        description="Also train M1 on seed + an equal-size random sample of A (no curation), "
        "so that 'does curation help?' has a number.",
    )
    ablation_seed: int = Field(0, description="Seed of the ablation's random sample.")
    evaluation: EvaluationSettings = EvaluationSettings()
