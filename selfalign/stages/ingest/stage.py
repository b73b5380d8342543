"""The ingestion stages: claim the output, start Ray, run the pipeline, record the stats.

Ingestion is not resumable inside a run (it clears its outputs and streams again); a
completed ingestion with the same settings is skipped, another one's output refused.
"""

from __future__ import annotations

import logging

from selfalign.core import claims, io
from selfalign.core.config import RESOLVED_CONFIG_NAME, config_to_yaml
from selfalign.core.embedded import seed_pairs_path
from selfalign.core.resources import load_ray_config
from selfalign.stages.ingest.config import CorpusIngestConfig, SeedIngestConfig

log = logging.getLogger(__name__)


def _start(kind: str, config, overwrite: bool) -> dict | None:
    """The policy, then Ray; returns the stats of a completed run (then nothing runs)."""
    from selfalign.core.cluster import ensure_ray
    from selfalign.stages.ingest.pipeline import STATS_NAME

    output = config.output.rstrip("/")
    settings = claims.settings_of(config)
    if claims.check_output(output, kind, settings, overwrite=overwrite) == "complete":
        log.info("%s: already complete in %s, skipping", kind, output)
        return io.read_json(f"{output}/{STATS_NAME}")
    claims.begin(output, kind, settings)
    ensure_ray(load_ray_config(config.ray_config).profile(config.profile), config.ray_address)
    io.write_text(f"{output}/{RESOLVED_CONFIG_NAME}", config_to_yaml(config))
    return None


def run_corpus(config: CorpusIngestConfig, *, overwrite: bool = False) -> dict:
    from selfalign.stages.ingest import pipeline

    # Sources are listed first: a missing input is an error before anything is claimed.
    if config.inputs:
        sources, filesystems = pipeline.expand_sources(config.inputs, config.limit_files)
    else:
        sources, filesystems = pipeline.embedded_sources()[: config.limit_files], []
    done = _start("ingest_corpus", config, overwrite)
    if done is not None:
        return done
    stats = pipeline.run_corpus(config, sources, filesystems)
    claims.complete(config.output, "ingest_corpus", claims.settings_of(config), **stats)
    return stats


def run_seed(config: SeedIngestConfig, *, overwrite: bool = False) -> dict:
    from selfalign.stages.ingest import pipeline

    sources, filesystems = pipeline.expand_sources(config.inputs or [seed_pairs_path()])
    done = _start("ingest_seed", config, overwrite)
    if done is not None:
        return done
    stats = pipeline.run_seed(config, sources, filesystems)
    claims.complete(config.output, "ingest_seed", claims.settings_of(config), **stats)
    return stats
