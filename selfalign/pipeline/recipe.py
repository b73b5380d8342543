"""What a recipe is to the pipeline: a config type, a plan, and its report sections (pure).

A recipe lives in ``selfalign/recipes/<name>/`` and is one line in the registry
(``selfalign.recipes.RECIPES``); ``selfalign run <name>`` plans it, runs it resumably
(``selfalign.pipeline.runner``) and writes the generic report plus the recipe's own
sections (``selfalign.pipeline.report``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from selfalign.core.config import DEFAULT_MODEL, Placement
from selfalign.pipeline.step import Step


class RecipeConfig(Placement):
    """The fields every recipe's config has; a recipe adds its own sections."""

    run_dir: str = Field("runs/run", description="Every step's output lives under here.")
    model: str = Field(DEFAULT_MODEL, description="Base model every model is fine-tuned from.")


@dataclass(frozen=True)
class ReportInput:
    """What a recipe's report sections read: the run, its steps and their records."""

    config: RecipeConfig
    steps: list[Step]
    records: Mapping[str, dict]  # finished steps only: name -> record (result, timings)

    def done(self, kind: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.name in self.records and kind in (None, s.kind)]


@dataclass(frozen=True)
class Recipe:
    name: str
    config_type: type[RecipeConfig]
    plan: Callable[[Any], list[Step]]
    title: str = ""
    # Extra sections of report.json, and their HTML (placed after the held-out table).
    report: Callable[[ReportInput], dict[str, Any]] | None = None
    render: Callable[[dict[str, Any]], list[str]] | None = None
    description: str = ""
