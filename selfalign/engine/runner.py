"""The one runner of every resumable engine stage: read, request, engine, finish, write.

A stage is an ``EngineStage``: a name (also its entry in ``ray_config.yaml``'s stages),
a config (``StageJobConfig`` or a subclass), the engine operation, and two pure row
functions — input row -> engine request row, engine row -> output row. Everything else
(the existing-output policy, the model, the cluster, the exactly-once writer) is here,
once, for backtranslate, curate and any recipe's own stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from selfalign.core import claims, io
from selfalign.core.errors import ConfigError
from selfalign.engine.config import StageJobConfig
from selfalign.engine.processor import Operation

log = logging.getLogger(__name__)

Row = dict[str, Any]


@dataclass(frozen=True)
class EngineStage:
    name: str
    config: StageJobConfig
    operation: Operation
    to_request: Callable[[Row], Row]
    to_result: Callable[[Row], Row]
    logprobs_top_k: int = 20
    # Input rows with a ``reject_reason`` (rejected by the previous stage and recorded in
    # its ``rejects/``) are not processed again.
    skip_rejected_input: bool = False


def run_engine_stage(stage: EngineStage, *, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume, or skip when complete) ``stage``; returns its manifest."""
    from selfalign.core.cluster import ensure_ray
    from selfalign.core.models import resolve_model
    from selfalign.core.resources import load_ray_config
    from selfalign.engine.processor import EngineSpec, run_engine
    from selfalign.engine.stage import fixed_input, run_stage

    config = stage.config
    if not config.input:
        raise ConfigError(f"selfalign {stage.name}: --input is required")
    output = io.absolute(config.output)
    config = config.model_copy(update={"output": output})
    # Before Ray starts or any input is read: another run's output is refused at once.
    state = claims.check_output(output, stage.name, claims.settings_of(config), overwrite=overwrite)
    if state == "complete":
        log.info("%s: already complete in %s, skipping", stage.name, output)
        return claims.read_manifest(output) or {}
    if state == "resume":
        log.info("%s: resuming the interrupted run in %s", stage.name, output)
    profile = load_ray_config(config.ray_config).profile(config.profile)
    model = resolve_model(config.model)
    ensure_ray(profile, config.ray_address)
    spec = EngineSpec(
        model_path=model.path,
        resources=profile.stage(stage.name),
        vllm=config.vllm,
        sampling=config.sampling,
        device=profile.device,
        operation=stage.operation,
        logprobs_top_k=stage.logprobs_top_k,
    )

    def transform(rows):
        return run_engine(rows.map(stage.to_request), spec).map(stage.to_result)

    claims.begin(output, stage.name, claims.settings_of(config))
    rows = fixed_input(config.input, output, config.limit)
    if stage.skip_rejected_input and "reject_reason" in rows.schema().names:
        rows = rows.filter(lambda row: row["reject_reason"] is None)
    return run_stage(stage.name, rows, transform, output, config, id_column=config.id_column)
