"""The Humback loop as a plan of steps (Li et al. 2023, instruction backtranslation).

    ingest seed, ingest corpus -> split seed (train / held-out)
    -> train M_yx (backward) -> backtranslate the segments (candidate set A)
    -> train M0 (seed) -> curate A with M0 -> mix seed + A(1) -> train M1
    -> curate A with M1 -> mix seed + A(2) -> train M2 ...
    (+ the ablation: M1 trained on seed + an equal-size *random* sample of A)
    -> evaluate every model (base, M0, M1, ...) right after it is trained

Every model is fine-tuned from the base model, as in the paper; M_t (t >= 1) trains in
the source-tagged ``curated`` chat format and is scored, evaluated and served in it.
M_yx is published as the backward model, M0, M1, ... as the scorer (never the
ablation's model). Pure: configs and plan only.
"""

from __future__ import annotations

from typing import Any

from selfalign.core.config import deep_merge
from selfalign.pipeline.plan import Handle, Plan
from selfalign.pipeline.step import Publish, Step
from selfalign.recipes.humback.config import HumbackConfig


def eval_format(model: str) -> tuple[str, str | None]:
    """How a model is prompted at evaluation: the chat format it was trained in, and for
    the source-tagged models the AI-Assistant tag (the paper's best inference setting)."""
    if model in ("base", "m0"):
        return "seed", None
    return "curated", "seed"


def plan(config: HumbackConfig) -> list[Step]:
    """Every step of the loop with its typed config; raises ConfigError for bad settings."""
    p = Plan("humback", config.run_dir, config.placement())

    seed = p.add(
        "ingest_seed",
        "ingest_seed",
        settings=config.seed,
        location="seed",
        section="seed",
        description="seed pairs -> one schema",
    )
    corpus = p.add(
        "ingest_corpus",
        "ingest_corpus",
        settings=config.corpus,
        location="corpus",
        section="corpus",
        description="web documents -> clean, deduplicated segments",
    )
    split = p.add(
        "split",
        "split",
        settings=config.heldout.model_dump(),
        planned={"input": seed.ref("pairs")},
        location="seed_split",
        section="heldout",
        description=f"hold out {config.heldout.size} seed pairs for evaluation",
    )

    def train(name: str, chat_format: str, data, what: str, publishes=None) -> Handle:
        section = (
            config.train.curated if chat_format == "curated" else getattr(config.train, chat_format)
        )
        return p.add(
            name,
            "train",
            settings=deep_merge(dict(config.train.common), dict(section)),
            planned={"chat_format": chat_format, "input": data, "model": config.model},
            publishes=publishes,
            section=f"train ({name})",
            description=what,
            labels={"model": name},
        )

    def evaluate(model: str, trained: Handle | None) -> None:
        # Right after each model, so the numbers come in as the loop advances.
        chat_format, source_tag = eval_format(model)
        p.add(
            f"eval_{model}",
            "evaluate",
            settings=config.evaluation.model_dump(exclude={"base"}),
            planned={
                "model": trained.ref("model") if trained else config.model,
                "heldout": split.ref("heldout"),
                "chat_format": chat_format,
                "source_tag": source_tag,
            },
            location=f"eval/{model}.json",
            section="evaluation",
            description=f"held-out loss and sample generations of {model}",
            labels={"model": model},
        )

    def mix(name: str, augmented: dict[str, Any], what: str) -> Handle:
        # The tags are set here, whatever the inputs called their source (an oasst1 seed
        # set says "oasst1"): the curated chat format knows exactly these two.
        parts = [
            {"input": split.ref("train"), "source": "seed"},
            {**augmented, "source": "augmented"},
        ]
        return p.add(name, "mix", planned={"parts": parts}, description=what)

    if config.evaluation.base:
        evaluate("base", None)
    backward = train(
        "backward",
        "backward",
        split.ref("train"),
        "train M_yx on reversed seed",
        publishes=Publish(role="backward"),
    )
    augment = p.add(
        "augment",
        "backtranslate",
        settings=config.backtranslate,
        planned={
            "input": corpus.ref("segments"),
            "model": backward.ref("model"),
            "limit": config.segments_limit,
        },
        section="backtranslate",
        description="M_yx writes an instruction for every segment (candidate set A)",
    )
    scorer = train(
        "m0",
        "seed",
        split.ref("train"),
        "train M0 on the seed pairs",
        publishes=Publish(role="current", scorer_format="seed"),
    )
    evaluate("m0", scorer)

    for t in range(1, config.iterations + 1):
        scorer_format = "seed" if t == 1 else "curated"
        curate = p.add(
            f"curate_{t}",
            "curate",
            settings=config.curate,
            planned={
                "input": augment.ref("data"),
                "model": scorer.ref("model"),
                "scorer_format": scorer_format,
            },
            section="curate",
            description=f"M{t - 1} scores A; keep the pairs that pass (A({t}))",
            labels={"iteration": t, "scorer": f"m{t - 1}"},
        )
        data = mix(f"mix_{t}", {"input": curate.ref("selected")}, f"seed + A({t})")
        model = train(
            f"m{t}",
            "curated",
            data.ref("data"),
            f"train M{t} on seed + A({t})",
            publishes=Publish(role="current", scorer_format="curated"),
        )
        evaluate(f"m{t}", model)
        if t == 1 and config.ablation:
            # As many pairs as A(1), drawn at random from every scored pair.
            sample = {"size_of": curate.ref("selected"), "seed": config.ablation_seed}
            random_mix = mix(
                "mix_1_random",
                {"input": curate.ref("data"), "sample": sample},
                "seed + a random sample of A as large as A(1) (ablation)",
            )
            ablation = train(
                "m1_random",
                "curated",
                random_mix.ref("data"),
                "train M1 on seed + uncurated pairs (ablation)",
            )
            evaluate("m1_random", ablation)
        scorer = model
    return p.steps
