"""Typed configuration: the strict pydantic base, YAML loading and dotted overrides.

Two files describe a run:

* a *job config* (``jobs/configs/*.yaml`` or ``--config``): what to do — model,
  input/output, sampling, engine settings;
* ``ray_config.yaml`` (``selfalign.core.resources``): how the pipeline maps onto Ray
  resources, in named profiles.

Overrides use dotted keys (``sampling.max_tokens=64``); values are parsed as YAML
scalars so ``true``, ``3`` and ``0.7`` get their natural types. Every output
directory gets the fully resolved config beside it (``_selfalign_config.yaml``).

Pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfalign.core.errors import ConfigError

DEFAULT_MODEL = "embedded:smollm2-135m-instruct"
# Leading underscore: pyarrow and Ray Data skip such files when reading a directory of
# shards, so the config can live beside the Parquet files it describes.
RESOLVED_CONFIG_NAME = "_selfalign_config.yaml"
# Where a job runs and how it is resourced: never part of what it computes.
PLACEMENT_FIELDS = frozenset({"profile", "ray_config", "ray_address"})

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Strict(BaseModel):
    """Base of every config: unknown keys are errors (a YAML typo must not be silently
    ignored), and a built config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields that do not change what a run computes: a rerun that differs only in them
    # resumes the same output (see ``selfalign.core.claims``).
    resume_ignore: ClassVar[frozenset[str]] = frozenset()


class Placement(Strict):
    """Where a job runs: the resource profile, the file it comes from and the cluster."""

    profile: str = Field("local", description="Resource profile in ray_config.yaml.")
    ray_config: str | None = Field(
        None, description="Path to ray_config.yaml (default: ./ray_config.yaml, else the repo's)."
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join (default: RAY_ADDRESS, else a local one)."
    )

    resume_ignore: ClassVar[frozenset[str]] = PLACEMENT_FIELDS

    def placement(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in sorted(PLACEMENT_FIELDS)}


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}`` (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. sampling.max_tokens=64)")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        value = yaml.safe_load(raw) if raw != "" else ""
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def build_config(
    cls: type[ConfigT],
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> ConfigT:
    """Build ``cls`` from an optional YAML file plus overrides; errors name the bad key."""
    data: dict[str, Any] = read_yaml(path) if path else {}
    extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    data = deep_merge(data, extra)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()
        )
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid {cls.__name__}{source}: {problems}") from None


def config_to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
