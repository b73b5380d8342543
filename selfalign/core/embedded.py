"""Paths of the data files the package ships (``selfalign/data/``): the defaults that
make every command run offline."""

from __future__ import annotations

from importlib import resources


def data_path(name: str) -> str:
    return str(resources.files("selfalign") / "data" / name)


def seed_pairs_path() -> str:
    """The embedded seed set (70 pairs written by the team)."""
    return data_path("seed_pairs.jsonl")


def sample_prompts_path() -> str:
    """The embedded sample prompts of ``selfalign generate``."""
    return data_path("sample_prompts.jsonl")


def eval_prompts_path() -> str:
    """The fixed prompts of the evaluation's sample generations."""
    return data_path("eval_prompts.jsonl")
