"""The generate stage: stream rows through the vLLM engine on Ray Data, write Parquet.

Output: Parquet shards with the input columns plus the engine's result columns
(``selfalign.engine.rows``), ``_selfalign_config.yaml``, ``_selfalign_summary.json``
(rows, ok, errors, output tokens, tokens/s) and the claim ``_manifest.json``.
"""

from __future__ import annotations

import logging
import time

from selfalign.core import claims, io
from selfalign.core.config import RESOLVED_CONFIG_NAME, config_to_yaml
from selfalign.core.embedded import sample_prompts_path
from selfalign.core.resources import load_ray_config
from selfalign.stages.generate.config import GenerateConfig

log = logging.getLogger(__name__)

SUMMARY_NAME = "_selfalign_summary.json"


def run(config: GenerateConfig, *, overwrite: bool = False) -> dict:
    """Run the generate job; returns its summary (also written beside the output)."""
    from selfalign.core.cluster import ensure_ray
    from selfalign.core.datasets import read_rows
    from selfalign.core.models import resolve_model
    from selfalign.engine.processor import EngineSpec, run_engine

    settings = claims.settings_of(config)
    state = claims.check_output(config.output, "generate", settings, overwrite=overwrite)
    if state == "complete":
        log.info("generate: already complete in %s, skipping", config.output)
        return io.read_json(f"{config.output.rstrip('/')}/{SUMMARY_NAME}")
    # Rows carry no resume key: an interrupted run of the same config starts over.
    io.clear_output(config.output)
    claims.begin(config.output, "generate", settings)
    profile = load_ray_config(config.ray_config).profile(config.profile)
    model = resolve_model(config.model)
    ensure_ray(profile, config.ray_address)
    io.write_text(f"{config.output.rstrip('/')}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))

    spec = EngineSpec(
        model_path=model.path,
        resources=profile.stage("generate"),
        vllm=config.vllm,
        sampling=config.sampling,
        device=profile.device,
        operation=config.operation,
        logprobs_top_k=config.logprobs_top_k,
    )
    rows = read_rows(config.input or sample_prompts_path(), limit=config.limit)
    started = time.perf_counter()
    run_engine(rows, spec).write_parquet(config.output)
    elapsed = time.perf_counter() - started
    summary = summarize(config.output, elapsed)
    summary["model"] = config.model
    io.write_json(f"{config.output.rstrip('/')}/{SUMMARY_NAME}", summary)
    claims.complete(config.output, "generate", settings, **summary)
    return summary


def summarize(output: str, elapsed_s: float) -> dict:
    """Counts read back from the written shards: rows in = rows ok + rows with an error."""
    table = io.read_table(output, columns=["error", "num_generated_tokens"])
    errors = table.column("error").drop_null()
    tokens = sum(v for v in table.column("num_generated_tokens").to_pylist() if v)
    return {
        "rows": table.num_rows,
        "ok": table.num_rows - len(errors),
        "errors": len(errors),
        "output_tokens": tokens,
        "elapsed_s": round(elapsed_s, 2),
        "output_tokens_per_s": round(tokens / elapsed_s, 2) if elapsed_s else None,
        "output": output,
    }
