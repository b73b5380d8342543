"""The published-model pointer: how a running scoring service learns of a new model.

A pipeline calls ``publish_model(run_dir, model_path)`` as each model lands; it writes a
small JSON pointer (``<run_dir>/serve/current.json``, ``backward.json`` for the backward
model) atomically, and service replicas that poll it switch engines without failing
in-flight requests (``selfalign.serving.runner``). Pure: pyarrow only.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from selfalign.core import io

POINTER_DIR = "serve"
# The chat formats a scorer may have been trained in (as selfalign.formats.ScorerFormat;
# core cannot import formats, so the two names are kept equal by a unit test).
ScorerFormat = Literal["seed", "curated"]


def pointer_uri(run_dir: str, role: Literal["current", "backward"] = "current") -> str:
    """Where ``publish_model`` writes the pointer of ``role`` under a run directory."""
    return f"{str(run_dir).rstrip('/')}/{POINTER_DIR}/{role}.json"


def publish_model(
    run_dir: str,
    model: str,
    *,
    role: Literal["current", "backward"] = "current",
    scorer_format: ScorerFormat | None = None,
) -> dict[str, Any]:
    """Tell running services to switch to ``model`` (any model reference).

    Writes ``<run_dir>/serve/<role>.json`` atomically (a local file is written beside and
    renamed; an object-store PUT is atomic), so a replica never reads half a pointer.
    ``scorer_format``: the chat format ``model`` was trained in (``curated`` for M1+),
    so the service prompts it as the curate stage would. Returns the pointer.
    """
    pointer = {
        "model": str(model),
        "scorer_format": scorer_format,
        "published_at": time.time(),
        # Distinguishes two publishes of the same path (weights overwritten in place).
        "publish_id": uuid.uuid4().hex,
    }
    io.write_json(pointer_uri(run_dir, role), pointer)
    return pointer


def read_pointer(uri: str) -> dict[str, Any] | None:
    """The pointer at ``uri``, or None when it is missing or unreadable. Never raises."""
    try:
        data = io.read_json(uri)
    except Exception:  # noqa: BLE001 - a missing or half-written pointer is "no change"
        return None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
        return None
    if "scorer_format" not in data and "scorer_recipe" in data:
        # Written before "recipe" came to mean a pipeline recipe: same value, old name.
        data = {**data, "scorer_format": data.pop("scorer_recipe")}
    if data.get("scorer_format") not in (None, "seed", "curated"):
        return None
    return data


def pointer_key(pointer: Mapping[str, Any]) -> str:
    """What identifies one publish: the model and the publish id (or time)."""
    return f"{pointer.get('model')}\0{pointer.get('publish_id') or pointer.get('published_at')}"
