"""Instruction backtranslation (Humback, Li et al. 2023) as a recipe.

``config`` (``HumbackConfig``), ``plan`` (the loop's steps), ``report`` (its report
sections). ``selfalign run humback`` runs it.
"""

from selfalign.pipeline.recipe import Recipe
from selfalign.recipes.humback import report
from selfalign.recipes.humback.config import HumbackConfig
from selfalign.recipes.humback.plan import plan

RECIPE = Recipe(
    name="humback",
    config_type=HumbackConfig,
    plan=plan,
    title="Humback run report",
    report=report.collect,
    render=report.render,
    description="instruction backtranslation: M_yx -> A -> M0 -> A(1) -> M1 -> A(2) -> M2",
)
