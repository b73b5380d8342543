"""The Humback loop as a plan of steps: what runs, in which order, on what, into where.

    ingest seed, ingest corpus -> split seed (train / held-out)
    -> train M_yx (backward) -> backtranslate the segments (candidate set A)
    -> train M0 (seed) -> curate A with M0 -> mix seed + A(1) -> train M1
    -> curate A with M1 -> mix seed + A(2) -> train M2 ...
    (+ the ablation: M1 trained on seed + an equal-size *random* sample of A)
    -> evaluate every model (base, M0, M1, ...) -> report

Every step writes under one run directory (local path or object-store URI). A step's
*fingerprint* hashes its own settings and the fingerprints of the steps it reads, so a
changed setting redoes that step and everything downstream of it, and nothing else.
The runner (``selfalign.runtime.loop``) records each finished step; a rerun skips
those and resumes the interrupted one (every stage is resumable on its own).

Pure: configs and plan only; no ray/vllm/torch imports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator

from selfalign.config import (
    DEFAULT_MODEL,
    BacktranslateConfig,
    ConfigError,
    CurateConfig,
    _Strict,
    deep_merge,
)
from selfalign.ingest.config import CorpusIngestConfig, SeedIngestConfig
from selfalign.training.config import TrainConfig

StepKind = Literal[
    "ingest_seed",
    "ingest_corpus",
    "split",
    "train",
    "backtranslate",
    "curate",
    "mix",
    "evaluate",
]

# Keys each section may not set: the plan decides them (where a step reads and writes,
# which model it trains from, which recipe).
_PLANNED_KEYS = {
    "seed": {"output", "profile", "ray_config", "ray_address"},
    "corpus": {"output", "profile", "ray_config", "ray_address"},
    "backtranslate": {"input", "output", "model", "profile", "ray_config", "ray_address"},
    "curate": {
        "input",
        "output",
        "model",
        "scorer_recipe",
        "profile",
        "ray_config",
        "ray_address",
    },
    "train": {"recipe", "input", "output", "model", "profile", "ray_config", "ray_address"},
}


class HeldoutSettings(_Strict):
    """Human-written seed pairs kept out of every training set, for the held-out loss."""

    size: int = Field(
        10, ge=1, description="Seed pairs held out (chosen by a seeded hash of their ids)."
    )
    seed: int = Field(0, description="Changes which pairs are held out.")


class TrainSections(_Strict):
    """``selfalign train`` settings per model (any TrainConfig field but the planned ones)."""

    common: dict[str, Any] = Field(default_factory=dict, description="Applied to every model.")
    backward: dict[str, Any] = Field(default_factory=dict, description="M_yx only.")
    seed: dict[str, Any] = Field(default_factory=dict, description="M0 only.")
    curated: dict[str, Any] = Field(
        default_factory=dict, description="M1, M2, ... and the ablation."
    )


class EvaluationSettings(_Strict):
    """What is measured after each model."""

    prompts: list[str] | None = Field(
        None,
        description="Fixed prompts for sample generations; default: selfalign/data/eval_prompts.jsonl.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Greedy tokens per sample generation.")
    max_seq_len: int = Field(2048, ge=16, description="Held-out pairs are truncated to this.")
    base: bool = Field(True, description="Also evaluate the untouched base model.")


class HumbackConfig(_Strict):
    """``selfalign run humback``: the whole self-alignment loop in one run directory."""

    run_dir: str = Field("runs/humback", description="Every step's output lives under here.")
    model: str = Field(DEFAULT_MODEL, description="Base model every model is fine-tuned from.")
    iterations: int = Field(
        2, ge=1, le=8, description="Curate-and-train rounds after M0: 2 gives M1 and M2."
    )
    profile: str = Field("local", description="Resource profile in ray_config.yaml.")
    ray_config: str | None = None
    ray_address: str | None = None

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

    @model_validator(mode="after")
    def _check_sections(self) -> HumbackConfig:
        for section in ("seed", "corpus", "backtranslate", "curate"):
            _refuse_planned(section, getattr(self, section))
        for name in ("common", "backward", "seed", "curated"):
            _refuse_planned("train", getattr(self.train, name), f"train.{name}")
        return self


def _refuse_planned(section: str, values: dict[str, Any], where: str | None = None) -> None:
    planned = sorted(_PLANNED_KEYS[section] & set(values))
    if planned:
        raise ValueError(
            f"{where or section}: {', '.join(planned)} cannot be set here; the loop sets them "
            "(use run_dir, model, profile, ray_config, ray_address at the top level)"
        )


@dataclass(frozen=True)
class Step:
    """One unit of the loop; ``output`` is a URI under the run directory."""

    name: str
    kind: StepKind
    output: str
    needs: tuple[str, ...] = ()
    config: Any = None  # the stage's typed config, or a dict for the loop's own steps
    description: str = ""
    fingerprint: str = field(default="", compare=False)


def model_names(iterations: int) -> list[str]:
    """The forward models in order: m0, m1, ..., m<iterations>."""
    return [f"m{t}" for t in range(iterations + 1)]


def heldout_ids(ids: list[str], size: int, seed: int) -> set[str]:
    """The ``size`` ids held out: the smallest by a seeded hash (stable, order-free).

    >>> sorted(heldout_ids(["a", "b", "c", "d"], 2, 0)) == sorted(heldout_ids(["d", "c", "b", "a"], 2, 0))
    True
    """
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[:size])


def random_sample_ids(ids: list[str], size: int, seed: int) -> list[str]:
    """An equal-size random sample for the ablation, independent of any score."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"ablation:{seed}:{i}".encode()).hexdigest())
    return ranked[:size]


def eval_recipe(model: str) -> tuple[str, str | None]:
    """How a model is prompted at evaluation: the recipe it was trained with, and for the
    source-tagged models the AI-Assistant tag (the paper's best inference setting)."""
    if model in ("base", "m0"):
        return "seed", None
    return "curated", "seed"


def plan(config: HumbackConfig) -> list[Step]:
    """Every step of the loop with its typed config; raises ConfigError for bad settings."""
    run = config.run_dir.rstrip("/")
    where = {
        "profile": config.profile,
        "ray_config": config.ray_config,
        "ray_address": config.ray_address,
    }
    steps: list[Step] = []
    add = steps.append

    add(
        Step(
            "ingest_seed",
            "ingest_seed",
            f"{run}/seed",
            config=_build(
                SeedIngestConfig, "seed", config.seed, {"output": f"{run}/seed", **where}
            ),
            description="seed pairs -> one schema",
        )
    )
    add(
        Step(
            "ingest_corpus",
            "ingest_corpus",
            f"{run}/corpus",
            config=_build(
                CorpusIngestConfig, "corpus", config.corpus, {"output": f"{run}/corpus", **where}
            ),
            description="web documents -> clean, deduplicated segments",
        )
    )
    add(
        Step(
            "split",
            "split",
            f"{run}/seed_split",
            needs=("ingest_seed",),
            config={"input": f"{run}/seed/pairs", **config.heldout.model_dump()},
            description=f"hold out {config.heldout.size} seed pairs for evaluation",
        )
    )
    seed_train = f"{run}/seed_split/train"
    heldout = f"{run}/seed_split/heldout"

    def train_step(name: str, recipe: str, data: str, needs: tuple[str, ...], what: str) -> Step:
        section = getattr(config.train, "curated" if recipe == "curated" else recipe)
        values = deep_merge(dict(config.train.common), dict(section))
        planned = {
            "recipe": recipe,
            "input": data,
            "output": f"{run}/{name}",
            "model": config.model,
        }
        return Step(
            name,
            "train",
            f"{run}/{name}",
            needs=needs,
            config=_build(TrainConfig, f"train ({name})", values, {**planned, **where}),
            description=what,
        )

    def add_eval(model: str) -> None:
        # Right after each model, so the numbers come in as the loop advances.
        recipe, source = eval_recipe(model)
        add(
            Step(
                f"eval_{model}",
                "evaluate",
                f"{run}/eval/{model}.json",
                needs=("split",) if model == "base" else ("split", model),
                config={
                    "model": config.model if model == "base" else f"{run}/{model}/model",
                    "heldout": heldout,
                    "recipe": recipe,
                    "source": source,
                    **config.evaluation.model_dump(exclude={"base"}),
                },
                description=f"held-out loss and sample generations of {model}",
            )
        )

    if config.evaluation.base:
        add_eval("base")
    add(train_step("backward", "backward", seed_train, ("split",), "train M_yx on reversed seed"))
    add(
        Step(
            "augment",
            "backtranslate",
            f"{run}/augment",
            needs=("ingest_corpus", "backward"),
            config=_build(
                BacktranslateConfig,
                "backtranslate",
                config.backtranslate,
                {
                    "input": f"{run}/corpus/segments",
                    "output": f"{run}/augment",
                    "model": f"{run}/backward/model",
                    "limit": config.segments_limit,
                    **where,
                },
            ),
            description="M_yx writes an instruction for every segment (candidate set A)",
        )
    )
    add(train_step("m0", "seed", seed_train, ("split",), "train M0 on the seed pairs"))
    add_eval("m0")

    for t in range(1, config.iterations + 1):
        scorer = f"m{t - 1}"
        curate = _build(
            CurateConfig,
            "curate",
            config.curate,
            {
                "input": f"{run}/augment/data",
                "output": f"{run}/curate_{t}",
                "model": f"{run}/{scorer}/model",
                "scorer_recipe": "seed" if t == 1 else "curated",
                **where,
            },
        )
        add(
            Step(
                f"curate_{t}",
                "curate",
                f"{run}/curate_{t}",
                needs=("augment", scorer),
                config=curate,
                description=f"{scorer.upper()} scores A; keep the pairs that pass (A({t}))",
            )
        )
        add(
            Step(
                f"mix_{t}",
                "mix",
                f"{run}/mix_{t}",
                needs=("split", f"curate_{t}"),
                config={
                    "seed": seed_train,
                    "augmented": f"{run}/curate_{t}/selected",
                    "sample": None,
                },
                description=f"seed + A({t})",
            )
        )
        add(
            train_step(
                f"m{t}", "curated", f"{run}/mix_{t}", (f"mix_{t}",), f"train M{t} on seed + A({t})"
            )
        )
        add_eval(f"m{t}")
        if t == 1 and config.ablation:
            add(
                Step(
                    "mix_1_random",
                    "mix",
                    f"{run}/mix_1_random",
                    needs=("split", "curate_1"),
                    config={
                        "seed": seed_train,
                        "augmented": f"{run}/curate_1/data",
                        # As many pairs as A(1), drawn at random from every scored pair.
                        "sample": {
                            "size_of": f"{run}/curate_1/selected",
                            "seed": config.ablation_seed,
                        },
                    },
                    description="seed + a random sample of A as large as A(1) (ablation)",
                )
            )
            add(
                train_step(
                    "m1_random",
                    "curated",
                    f"{run}/mix_1_random",
                    ("mix_1_random",),
                    "train M1 on seed + uncurated pairs (ablation)",
                )
            )
            add_eval("m1_random")

    return _fingerprinted(steps)


def _build(cls, section: str, values: dict[str, Any], planned: dict[str, Any]):
    try:
        return cls.model_validate(deep_merge(dict(values), planned))
    except ValueError as err:
        raise ConfigError(f"humback config, {section}: {err}") from None


def _fingerprinted(steps: list[Step]) -> list[Step]:
    by_name: dict[str, str] = {}
    out = []
    for step in steps:
        missing = [n for n in step.needs if n not in by_name]
        if missing:
            raise AssertionError(f"step {step.name} needs {missing} before it")
        settings = (
            step.config.model_dump(mode="json", exclude=_RESUMABLE)
            if hasattr(step.config, "model_dump")
            else step.config
        )
        payload = {
            "kind": step.kind,
            "output": step.output,
            "settings": settings,
            "needs": {n: by_name[n] for n in step.needs},
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
        by_name[step.name] = digest.hexdigest()[:16]
        out.append(Step(**{**step.__dict__, "fingerprint": by_name[step.name]}))
    return out


# Settings that do not change a step's result: where it runs and how it is resourced.
_RESUMABLE = {"profile", "ray_config", "ray_address"}
