"""The built-in step kinds: every stage, training and evaluation, as a pipeline step (pure).

Each kind names its runner in ``selfalign.pipeline.execute`` by path: importing this
module (and planning with it) imports no runtime library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from selfalign.evaluation.config import EvaluateConfig
from selfalign.pipeline.step import Rate, StepKind, register
from selfalign.stages.backtranslate.config import BacktranslateConfig
from selfalign.stages.curate.config import CurateConfig
from selfalign.stages.ingest.config import CorpusIngestConfig, SeedIngestConfig
from selfalign.stages.mix import MixConfig
from selfalign.stages.split import SplitConfig
from selfalign.training.config import TrainConfig

_EXECUTE = "selfalign.pipeline.execute"


def per_second(key: str, unit: str):
    """A rate: ``result[key]`` per second of the step's wall time."""

    def rate(result: Mapping[str, Any], elapsed: float) -> Rate:
        count = result.get(key)
        return (count / elapsed, unit) if count and elapsed else (None, None)

    return rate


def _train_rate(result: Mapping[str, Any], elapsed: float) -> Rate:
    value = result.get("tokens_per_s")
    return (value, "tokens/s") if value else (None, None)


def _evaluate_rate(result: Mapping[str, Any], elapsed: float) -> Rate:
    seconds = result.get("loss_s")
    return (result.get("heldout_tokens", 0) / seconds, "tokens/s") if seconds else (None, None)


INGEST_SEED = register(
    StepKind(
        "ingest_seed",
        SeedIngestConfig,
        f"{_EXECUTE}:ingest_seed",
        outputs={"pairs": "pairs", "rejects": "rejects", "drops": "drops"},
        headline=("pairs_out",),
        rate=per_second("records_in", "records/s"),
    )
)
INGEST_CORPUS = register(
    StepKind(
        "ingest_corpus",
        CorpusIngestConfig,
        f"{_EXECUTE}:ingest_corpus",
        outputs={"segments": "segments", "rejects": "rejects", "drops": "drops"},
        headline=("segments_out",),
        rate=per_second("documents_in", "documents/s"),
    )
)
SPLIT = register(
    StepKind(
        "split",
        SplitConfig,
        f"{_EXECUTE}:split",
        outputs={"train": "train", "heldout": "heldout"},
        headline=("train", "heldout"),
        needs_ray=False,
    )
)
MIX = register(
    StepKind(
        "mix",
        MixConfig,
        f"{_EXECUTE}:mix",
        outputs={"data": "data"},
        headline=("rows",),
        needs_ray=False,
    )
)
TRAIN = register(
    StepKind(
        "train",
        TrainConfig,
        f"{_EXECUTE}:train",
        outputs={"model": "model", "metrics": "metrics.jsonl"},
        headline=("examples", "steps"),
        rate=_train_rate,
    )
)
BACKTRANSLATE = register(
    StepKind(
        "backtranslate",
        BacktranslateConfig,
        f"{_EXECUTE}:backtranslate",
        outputs={"data": "data", "rejects": "rejects"},
        headline=("accepted", "rejected"),
        rate=per_second("rows", "rows/s"),
    )
)
CURATE = register(
    StepKind(
        "curate",
        CurateConfig,
        f"{_EXECUTE}:curate",
        outputs={"data": "data", "selected": "selected", "rejects": "rejects"},
        headline=("rows", "selected"),
        rate=per_second("rows", "rows/s"),
    )
)
EVALUATE = register(
    StepKind(
        "evaluate",
        EvaluateConfig,
        f"{_EXECUTE}:evaluate",
        outputs={"result": ""},
        headline=("heldout_loss",),
        rate=_evaluate_rate,
    )
)
