"""The recipes ``selfalign run <name>`` knows: one folder each, one line each here.

A recipe module exposes ``RECIPE`` (a ``selfalign.pipeline.recipe.Recipe``). Modules are
imported on demand, so listing the recipes imports none of them.
"""

from __future__ import annotations

import importlib

from selfalign.pipeline.recipe import Recipe

RECIPES: dict[str, str] = {
    "humback": "selfalign.recipes.humback",
}


def get_recipe(name: str) -> Recipe:
    try:
        module = RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
    return importlib.import_module(module).RECIPE
