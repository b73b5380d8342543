"""The runners of the built-in step kinds: each calls its stage's own entry point.

``function(config, context) -> result``. The context says where the run is (its
resource profile, its directory) and whether the step starts over (``overwrite``: its
settings changed since it last ran).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfalign.core.resources import ResourceProfile


@dataclass(frozen=True)
class StepContext:
    profile: ResourceProfile
    run_dir: str
    overwrite: bool = False


def _balanced(kind: str, stats: dict[str, Any]) -> dict[str, Any]:
    if not stats["balance"]["ok"]:
        raise RuntimeError(f"{kind} counts do not add up: {stats['balance']}")
    return stats


def ingest_seed(config, context: StepContext) -> dict:
    from selfalign.stages.ingest.stage import run_seed

    return _balanced("seed ingestion", run_seed(config, overwrite=context.overwrite))


def ingest_corpus(config, context: StepContext) -> dict:
    from selfalign.stages.ingest.stage import run_corpus

    return _balanced("corpus ingestion", run_corpus(config, overwrite=context.overwrite))


def split(config, context: StepContext) -> dict:
    from selfalign.stages.split import run

    return run(config)


def mix(config, context: StepContext) -> dict:
    from selfalign.stages.mix import run

    return run(config)


def train(config, context: StepContext) -> dict:
    from selfalign.training.driver import train as train_model

    return train_model(config, context.profile, overwrite=context.overwrite)


def backtranslate(config, context: StepContext) -> dict:
    from selfalign.stages.backtranslate.stage import run

    return run(config, overwrite=context.overwrite)


def curate(config, context: StepContext) -> dict:
    from selfalign.stages.curate.stage import run

    return run(config, overwrite=context.overwrite)


def evaluate(config, context: StepContext) -> dict:
    from selfalign.evaluation.evaluate import run

    return run(config, context.profile)
