"""Resumable stages: stream a dataset through a transform into Parquet shards, exactly once.

Layout of a stage's output directory::

    data/                    one row per input id (accepted and rejected alike)
    rejects/                 the rows with a ``reject_reason``, for inspection
    _checkpoint/             Ray Data's row-level checkpoint (ids already written)
    _input/                  with ``limit``: the fixed subset of input rows
    _selfalign_config.yaml   the resolved config
    _manifest.json           the claim (``selfalign.core.claims``): status, counts, reasons

Exactly-once rests on Ray Data's checkpointing for file sinks: each write task records
its ids as a *pending* checkpoint, writes its shard, then commits; on restart, ids whose
shard is committed are filtered out of the input and uncommitted leftovers are cleaned.
So a crash anywhere (driver or engine actor) followed by the same command ends with
exactly one row per input id. A completed stage is skipped; another config's output is
refused (``OutputConflict``) rather than mixed with this one's rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs
from pydantic import BaseModel

from selfalign.core import claims, io
from selfalign.core.config import RESOLVED_CONFIG_NAME, config_to_yaml
from selfalign.core.datasets import read_rows

log = logging.getLogger(__name__)

# A short reason code per rejected row (details, e.g. an engine error, go to
# ``reject_detail``), so that counts per reason stay readable.
REJECT_COLUMN = "reject_reason"


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def fixed_input(source: str, output: str, limit: int | None):
    """The stage's input rows; with ``limit``, a fixed subset materialised once.

    Ray Data filters checkpointed ids right after the read, so ``read().limit(N)`` would
    take N *new* rows on every resume. The first N rows are written to ``_input/`` once
    and every run reads them from there.
    """
    if not limit:
        return read_rows(source)
    staged = _join(output, "_input")
    marker = _join(staged, "_COMPLETE")
    if not io.is_file(marker):
        io.clear_output(staged)
        read_rows(source, limit=limit).write_parquet(staged)
        io.write_text(marker, f"{source} limit={limit}\n")
    return read_rows(staged)


def run_stage(
    name: str,
    dataset,
    transform: Callable[[Any], Any],
    output: str,
    config: BaseModel,
    *,
    id_column: str = "id",
) -> dict[str, Any]:
    """Run ``transform(dataset)`` into ``output`` resumably; returns the manifest.

    The caller has claimed ``output`` (``claims.check_output``, then ``claims.begin``
    before reading the input, which ``fixed_input`` may write under ``output``): this
    continues a ``resume`` or starts a ``new`` run.
    """
    from ray.data.checkpoint import CheckpointConfig

    output = io.absolute(output)
    settings = claims.settings_of(config)
    io.write_text(_join(output, RESOLVED_CONFIG_NAME), config_to_yaml(config))
    result = transform(dataset)
    # A Dataset plans with the DataContext it captured when it was created, so the
    # checkpoint config goes on this dataset's own context, not the global one.
    result.context.checkpoint_config = CheckpointConfig(
        id_column=id_column,
        checkpoint_path=_join(output, "_checkpoint"),
        # Kept: a completed stage is recognised by its manifest, and the checkpoint is
        # what makes a crash during the rejects pass below still resumable.
        delete_checkpoint_on_success=False,
    )
    result.write_parquet(_join(output, "data"))
    return claims.complete(output, name, settings, **_finalise(output, id_column))


def _finalise(output: str, id_column: str) -> dict[str, Any]:
    """Count the shards, check ids are unique, and copy rejected rows to ``rejects/``."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    filesystem, data_path = io.filesystem_for(_join(output, "data"))
    if not io.list_output_files(_join(output, "data")):
        # Nothing to write (every input row was skipped upstream): an empty result, which
        # later steps read as such, not a missing directory.
        filesystem.create_dir(data_path, recursive=True)
        return {"rows": 0, "accepted": 0, "rejected": 0, "reject_reasons": {}}
    dataset = io.parquet_dataset(_join(output, "data"))
    ids = dataset.to_table(columns=[id_column]).column(id_column)
    rows = len(ids)
    distinct = pc.count_distinct(ids).as_py()
    if distinct != rows:
        # Would mean a broken exactly-once guarantee or duplicate input ids: say so loudly.
        raise RuntimeError(f"{output}: {rows} rows but {distinct} distinct ids in data/")
    reasons: Counter[str] = Counter()
    rejected = 0
    if REJECT_COLUMN in dataset.schema.names:
        column = dataset.to_table(columns=[REJECT_COLUMN]).column(REJECT_COLUMN)
        reasons.update(column.drop_null().to_pylist())
        rejected = sum(reasons.values())
        _, rejects_path = io.filesystem_for(_join(output, "rejects"))
        if filesystem.get_file_info(rejects_path).type == pafs.FileType.Directory:
            filesystem.delete_dir_contents(rejects_path)
        rejects = dataset.filter(pc.field(REJECT_COLUMN).is_valid())
        pads.write_dataset(
            rejects,
            rejects_path,
            filesystem=filesystem,
            format="parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
    return {
        "rows": rows,
        "accepted": rows - rejected,
        "rejected": rejected,
        "reject_reasons": dict(sorted(reasons.items())),
    }
