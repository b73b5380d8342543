"""Ray Data wiring of the ingest pipelines; the stage logic is in the pure modules beside it.

Corpus pipeline (every pass streams; nothing is collected on the driver but counts):

1. *stage*: input files -> ``map_batches`` (one file per call, a generator of Arrow tables) ->
   ledger rows (``selfalign.stages.ingest.corpus``) -> ``<output>/_staging/items`` Parquet;
2. *dedup*: passing segments -> one row per (exact or LSH band key, segment) -> ``groupby``
   on a coarse bucket of the key (hash shuffle, spills to disk) -> per bucket, vectorised, the
   non-survivors ("losses") of every key; then segments and losses -> ``groupby`` on a bucket
   of the uid: a segment with no loss stays, one with losses becomes a single ``duplicate`` row
   (an anti-join by shuffle) -> ``<output>/_staging/resolved``;
3. *outputs*, side by side: ``segments/``, ``duplicates/``, and the ledger's rejects and filter
   drops -> ``rejects/``, ``drops/``;
4. *stats*: ``groupby(kind, stage, filter, reason)`` counts -> ``ingest-stats.json``.

Ray Data's own ``Dataset.join`` would do for step 2's anti-join but needs ``polars``; the
shuffle by uid needs nothing more and also picks the one reason reported per removed segment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from selfalign.core.io import filesystem_for, list_files
from selfalign.stages.ingest import corpus, readers, seed
from selfalign.stages.ingest.config import CorpusIngestConfig, SeedIngestConfig
from selfalign.stages.ingest.schema import (
    DROP_SCHEMA,
    DUPLICATE_SCHEMA,
    REJECT_SCHEMA,
    SEED_SCHEMA,
    SEGMENT_SCHEMA,
)

log = logging.getLogger(__name__)

STATS_NAME = "ingest-stats.json"
EMBEDDED_PREFIX = "python-package:"
_KEY_SCHEMA = pa.schema(
    [("key", pa.int64()), ("uid", pa.string()), ("id", pa.string()), ("exact", pa.bool_())]
)
_LOSS_SCHEMA = pa.schema(
    [
        ("uid", pa.string()),
        ("id", pa.string()),
        ("survivor_id", pa.string()),
        ("reason", pa.string()),
    ]
)


# --------------------------------------------------------------------------- inputs


def _uri(filesystem: pafs.FileSystem, uri: str, path: str) -> str:
    """The path as a user would write it: absolute for local files, scheme://... otherwise."""
    if isinstance(filesystem, pafs.LocalFileSystem):
        return path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{path}"


def expand_sources(inputs: list[str], limit: int | None = None) -> tuple[list[dict], list]:
    """Input files as rows ``{"path", "source", "fs"}`` plus the filesystems they index.

    Directories are walked recursively; every file counts (hidden and ``_``-prefixed names
    excepted), so a binary or unknown file in a corpus directory becomes a reject instead of
    vanishing. Globs match with ``fnmatch`` under their fixed prefix.
    """
    rows: list[dict] = []
    filesystems: list[pafs.FileSystem] = []
    for uri in inputs:
        filesystem, files = list_files(uri)
        filesystems.append(filesystem)
        index = len(filesystems) - 1
        rows.extend(
            {"path": f, "source": _uri(filesystem, uri, f), "fs": index} for f in sorted(files)
        )
    if limit:
        rows = rows[:limit]
    return rows, filesystems


def embedded_sources() -> list[dict]:
    return [
        {"path": name, "source": f"{EMBEDDED_PREFIX}{name}", "fs": -1}
        for name in readers.embedded_corpus_names()
    ]


def _items(
    row: dict, filesystems: list, fmt: str, settings, columns=None
) -> Iterator[readers.Item]:
    if int(row["fs"]) < 0:
        return readers.iter_embedded(str(row["path"]), settings)
    filesystem, path = filesystems[int(row["fs"])], str(row["path"])
    # compression=None: gzip is undone by the readers themselves, so that a truncated
    # stream becomes a counted reject rather than an exception inside pyarrow.
    return readers.iter_file(
        lambda: filesystem.open_input_stream(path, compression=None),
        lambda: filesystem.open_input_file(path),
        path,
        fmt,
        settings,
        columns=columns,
    )


def _auto_buckets(staging: str, settings, partitions: int) -> int:
    """Enough buckets that one holds about a million key rows (a few tens of MB)."""
    import ray

    rows = ray.data.read_parquet(staging).count()  # Parquet footers only
    key_rows = rows * (int(settings.exact) + (settings.bands if settings.near else 0))
    return max(partitions, -(-key_rows // 1_000_000))


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _sources_dataset(rows: list[dict]):
    import ray

    # A few blocks per CPU: files are read in parallel, a slow file holds back only its
    # block, and the staging dataset is written as a few files rather than one per input
    # file (every later pass pays a task per staging file).
    return ray.data.from_items(
        rows, override_num_blocks=max(1, min(len(rows), 4 * _cluster_cpus()))
    )


def _source_rows(batch: dict[str, np.ndarray]) -> Iterator[dict]:
    for path, source, fs in zip(batch["path"], batch["source"], batch["fs"], strict=True):
        yield {"path": str(path), "source": str(source), "fs": int(fs)}


# --------------------------------------------------------------------------- corpus


def _stage_corpus(batch: dict[str, np.ndarray], *, filesystems, config: CorpusIngestConfig):
    columns = [config.text_column] + ([config.url_column] if config.url_column else [])
    for row in _source_rows(batch):
        items = _items(row, filesystems, config.format, config.read, columns)
        yield from corpus.batched_tables(corpus.source_rows(items, row["source"], config))


def _explode_keys(table: pa.Table, *, exact: bool, near: bool) -> pa.Table:
    import pyarrow.compute as pc

    parts = []
    if exact:
        parts.append(
            pa.table(
                {
                    "key": table["text_key"],
                    "uid": table["uid"],
                    "id": table["id"],
                    "exact": pa.array([True] * table.num_rows, pa.bool_()),
                }
            )
        )
    if near:
        bands = table["band_keys"].combine_chunks()
        parents = pc.list_parent_indices(bands)
        parts.append(
            pa.table(
                {
                    "key": pc.list_flatten(bands),
                    "uid": pc.take(table["uid"], parents),
                    "id": pc.take(table["id"], parents),
                    "exact": pa.array([False] * len(parents), pa.bool_()),
                }
            )
        )
    if not parts:
        return _KEY_SCHEMA.empty_table()
    return pa.concat_tables([p.cast(_KEY_SCHEMA) for p in parts])


def _add_key_bucket(table: pa.Table, *, buckets: int) -> pa.Table:
    from selfalign.stages.ingest.dedup import bucket_of

    return table.append_column("bucket", pa.array(bucket_of(table["key"].to_numpy(), buckets)))


def _bucket_losses(group: pa.Table) -> pa.Table:
    from selfalign.stages.ingest.dedup import losers_in_bucket

    return losers_in_bucket(group).cast(_LOSS_SCHEMA)


_RESOLVE_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # segment | loss (input); segment | duplicate (output)
        *[(f.name, f.type) for f in SEGMENT_SCHEMA],
        ("uid", pa.string()),
        ("survivor_id", pa.string()),
        ("reason", pa.string()),
    ]
)


def _as_resolve_rows(table: pa.Table, *, kind: str) -> pa.Table:
    """Segments and losses in one schema, so that one shuffle by uid can meet them."""
    columns = {}
    for field in _RESOLVE_SCHEMA:
        if field.name == "kind":
            columns["kind"] = pa.array([kind] * table.num_rows, pa.string())
        elif field.name in table.column_names:
            columns[field.name] = table[field.name].cast(field.type)
        else:
            columns[field.name] = pa.nulls(table.num_rows, field.type)
    return pa.table(columns, schema=_RESOLVE_SCHEMA)


def _add_uid_bucket(table: pa.Table, *, buckets: int) -> pa.Table:
    from selfalign.stages.ingest.dedup import uid_bucket

    bucket = uid_bucket(table["uid"].to_pylist(), buckets)
    return table.append_column("bucket", pa.array(bucket, pa.int64()))


def _resolve_bucket(group: pa.Table) -> pa.Table:
    from selfalign.stages.ingest.dedup import resolve_bucket

    return resolve_bucket(group.drop_columns(["bucket"]))


def _has_parquet(uri: str) -> bool:
    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.Directory:
        return False
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    return any(i.path.endswith(".parquet") for i in infos)


def _write(ds, uri: str, schema: pa.Schema) -> None:
    """Write the schema's columns of ``ds``; an empty result still leaves a readable file."""
    ds.select_columns(schema.names).write_parquet(uri)
    if not _has_parquet(uri):
        _write_empty(uri, schema)


def _read_staging(uri: str, kind: str, columns: list[str] | None = None):
    import ray
    from ray.data.expressions import col

    ds = ray.data.read_parquet(uri)
    if columns is not None:
        ds = ds.select_columns(sorted({*columns, "kind"}))
    ds = ds.filter(expr=col("kind") == kind)
    return ds.select_columns(columns) if columns else ds


def _count_groups(ds, keys: list[str], sum_column: str | None = None) -> list[dict[str, Any]]:
    from ray.data.aggregate import Count, Sum

    aggs = [Count()] + ([Sum(sum_column, alias_name="n_segments")] if sum_column else [])
    # The result has a handful of rows: few partitions (Ray's default is 200).
    return ds.groupby(keys, num_partitions=2).aggregate(*aggs).take_all()


def run_corpus(config: CorpusIngestConfig, sources: list[dict], filesystems: list) -> dict:
    """Run the corpus pipeline on a started Ray; returns the stats (written beside outputs)."""
    import ray

    from selfalign.core.io import clear_output, write_json

    out = config.output.rstrip("/")
    staging, resolved = f"{out}/_staging/items", f"{out}/_staging/resolved"
    for name in ("segments", "rejects", "drops", "duplicates", "_staging"):
        clear_output(f"{out}/{name}")
    started = time.perf_counter()

    ds = _sources_dataset(sources).map_batches(
        partial(_stage_corpus, filesystems=filesystems, config=config),
        batch_size=1,
        batch_format="numpy",
    )
    ds.write_parquet(staging)
    staged_s = time.perf_counter() - started

    dedup_cfg = config.dedup
    partitions = dedup_cfg.num_partitions or min(200, _cluster_cpus())
    segments = _read_staging(staging, "segment")
    duplicates = None
    if dedup_cfg.exact or dedup_cfg.near:
        keys = _read_staging(staging, "segment", ["uid", "id", "text_key", "band_keys"])
        # Rows are shuffled by a coarse bucket of the key (or uid), not by the key itself:
        # each map_groups call then resolves thousands of keys with vectorised Arrow/numpy
        # code, where one Python call per key would dominate the run time.
        buckets = dedup_cfg.buckets or _auto_buckets(staging, dedup_cfg, partitions)
        losses = (
            keys.map_batches(
                partial(_explode_keys, exact=dedup_cfg.exact, near=dedup_cfg.near),
                batch_format="pyarrow",
            )
            .map_batches(partial(_add_key_bucket, buckets=buckets), batch_format="pyarrow")
            .groupby("bucket", num_partitions=partitions)
            .map_groups(_bucket_losses, batch_format="pyarrow")
        )
        # An anti-join by shuffle: segments and their losses meet in one group per uid bucket.
        both = segments.map_batches(
            partial(_as_resolve_rows, kind="segment"), batch_format="pyarrow"
        ).union(losses.map_batches(partial(_as_resolve_rows, kind="loss"), batch_format="pyarrow"))
        both.map_batches(partial(_add_uid_bucket, buckets=buckets), batch_format="pyarrow").groupby(
            "bucket", num_partitions=partitions
        ).map_groups(_resolve_bucket, batch_format="pyarrow").write_parquet(resolved)
        if _has_parquet(resolved):
            segments = _read_staging(resolved, "segment")
            duplicates = _read_staging(resolved, "duplicate")

    # Output passes, one after the other: on a small machine, concurrent Ray Data jobs
    # mostly fight over worker processes.
    _write(segments, f"{out}/segments", SEGMENT_SCHEMA)
    _write(_read_staging(staging, "reject"), f"{out}/rejects", REJECT_SCHEMA)
    _write(_read_staging(staging, "drop"), f"{out}/drops", DROP_SCHEMA)
    ledger_keys = ["kind", "stage", "filter", "reason", "n_segments"]
    ledger_ds = ray.data.read_parquet(staging).select_columns(ledger_keys)
    if duplicates is None:
        _write_empty(f"{out}/duplicates", DUPLICATE_SCHEMA)
    else:
        _write(duplicates, f"{out}/duplicates", DUPLICATE_SCHEMA)
        # Duplicates are counted in the same aggregation as the ledger.
        dup_ledger = ray.data.read_parquet(f"{out}/duplicates").select_columns(["reason"])
        ledger_ds = ledger_ds.union(
            dup_ledger.map_batches(_as_duplicate_ledger, batch_format="pyarrow")
        )
    grouped = _count_groups(ledger_ds, ["kind", "stage", "filter", "reason"], "n_segments")
    duplicate_counts = {r["reason"]: int(r["count()"]) for r in grouped if r["kind"] == "duplicate"}
    counts = [
        {
            "kind": r["kind"],
            "stage": r["stage"],
            "filter": r["filter"],
            "reason": r["reason"],
            "count": r["count()"],
            "n_segments": r.get("n_segments"),
        }
        for r in grouped
        if r["kind"] != "duplicate"
    ]
    segments_out = ray.data.read_parquet(f"{out}/segments").count()
    elapsed = time.perf_counter() - started
    stats = corpus.ledger(counts, segments_out, duplicate_counts)
    stats.update(
        input_files=len(sources),
        elapsed_s=round(elapsed, 2),
        staging_s=round(staged_s, 2),
        documents_per_s=round(stats["documents_in"] / elapsed, 1) if elapsed else None,
        outputs={name: f"{out}/{name}" for name in ("segments", "rejects", "drops", "duplicates")},
    )
    if not config.keep_staging:
        filesystem, path = filesystem_for(f"{out}/_staging")
        filesystem.delete_dir(path)
    write_json(f"{out}/{STATS_NAME}", stats)
    return stats


def _as_duplicate_ledger(table: pa.Table) -> pa.Table:
    n = table.num_rows
    return pa.table(
        {
            "kind": pa.array(["duplicate"] * n, pa.string()),
            "stage": pa.array(["dedup"] * n, pa.string()),
            "filter": pa.array(["dedup"] * n, pa.string()),
            "reason": table["reason"],
            "n_segments": pa.nulls(n, pa.int64()),
        }
    )


def _write_empty(uri: str, schema: pa.Schema) -> None:
    import pyarrow.parquet as pq

    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/empty.parquet") as stream:
        pq.write_table(schema.empty_table(), stream)


# --------------------------------------------------------------------------- seed


def _stage_seed(batch: dict[str, np.ndarray], *, filesystems, config: SeedIngestConfig):
    for row in _source_rows(batch):
        rows = []
        for item in _items(row, filesystems, "auto", config.read):
            if isinstance(item, readers.Reject):
                rows.append(
                    {
                        "kind": "reject",
                        "file": row["source"],
                        "locator": item.locator,
                        "stage": "read",
                        "filter": "",
                        "reason": item.reason,
                        "detail": item.detail,
                    }  # fmt: skip
                )
            elif item.kind != "row":
                rows.append(
                    {
                        "kind": "reject",
                        "file": row["source"],
                        "locator": item.locator,
                        "stage": "read",
                        "filter": "",
                        "reason": "missing_field",
                        "detail": "seed inputs are JSON/JSONL/Parquet records",
                    }  # fmt: skip
                )
            else:
                rows.append(seed.record_row(item.value, row["source"], item.locator, config))
            if len(rows) >= corpus.STAGING_BATCH_ROWS:
                yield pa.Table.from_pylist(rows, schema=seed.SEED_STAGING_SCHEMA)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=seed.SEED_STAGING_SCHEMA)


def _select_tree(group: pa.Table, *, config: SeedIngestConfig) -> pa.Table:
    row = seed.tree_rows(group.to_pylist(), config)
    row["stage"] = "tree"  # counted per tree in the stats
    return pa.Table.from_pylist([row], schema=seed.SEED_STAGING_SCHEMA)


def run_seed(config: SeedIngestConfig, sources: list[dict], filesystems: list) -> dict:
    import ray

    from selfalign.core.io import clear_output, write_json

    out = config.output.rstrip("/")
    staging, trees_dir = f"{out}/_staging/items", f"{out}/_staging/trees"
    for name in ("pairs", "rejects", "drops", "_staging"):
        clear_output(f"{out}/{name}")
    started = time.perf_counter()
    _sources_dataset(sources).map_batches(
        partial(_stage_seed, filesystems=filesystems, config=config),
        batch_size=1,
        batch_format="numpy",
    ).write_parquet(staging)

    from ray.data.expressions import col

    candidates = _read_staging(staging, "pair")
    drops = _read_staging(staging, "drop")
    ledger_ds = ray.data.read_parquet(staging).select_columns(["kind", "stage", "reason"])
    # Flat oasst1 messages: one group per tree picks the tree's pair (or its drop reason).
    _read_staging(staging, "message").groupby("tree_id").map_groups(
        partial(_select_tree, config=config), batch_format="pyarrow"
    ).write_parquet(trees_dir)
    if _has_parquet(trees_dir):
        tree_ds = ray.data.read_parquet(trees_dir)
        candidates = candidates.union(tree_ds.filter(expr=col("kind") == "pair"))
        drops = drops.union(tree_ds.filter(expr=col("kind") == "drop"))
        ledger_ds = ledger_ds.union(tree_ds.select_columns(["kind", "stage", "reason"]))

    if config.oasst.top_n is not None:
        # Ties in quality break on id, so the same N are kept on every run.
        best = (
            candidates.filter(expr=col("ranked"))
            .map_batches(_quality_for_sort, batch_format="pyarrow")
            .sort(["sort_quality", "id"], descending=[True, False])
            .limit(config.oasst.top_n)
            .drop_columns(["sort_quality"])
        )
        candidates = candidates.filter(expr=~col("ranked")).union(best)
    _write(candidates, f"{out}/pairs", SEED_SCHEMA)
    _write(_read_staging(staging, "reject"), f"{out}/rejects", _seed_reject_schema())
    _write(drops, f"{out}/drops", _seed_drop_schema())

    counts = [
        {"kind": r["kind"], "stage": r["stage"], "reason": r["reason"], "count": r["count()"]}
        for r in _count_groups(ledger_ds, ["kind", "stage", "reason"])
    ]
    pairs_out = ray.data.read_parquet(f"{out}/pairs").count()
    stats = seed.seed_ledger(counts, pairs_out)
    stats.update(
        input_files=len(sources),
        elapsed_s=round(time.perf_counter() - started, 2),
        outputs={name: f"{out}/{name}" for name in ("pairs", "rejects", "drops")},
    )
    filesystem, path = filesystem_for(f"{out}/_staging")
    filesystem.delete_dir(path)
    write_json(f"{out}/{STATS_NAME}", stats)
    return stats


def _quality_for_sort(table: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    # Pairs without a quality label rank last.
    return table.append_column("sort_quality", pc.fill_null(table["quality"], -1.0))


def _seed_reject_schema() -> pa.Schema:
    return pa.schema(
        [
            ("file", pa.string()),
            ("locator", pa.string()),
            ("stage", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
        ]
    )


def _seed_drop_schema() -> pa.Schema:
    return pa.schema(
        [
            ("source", pa.string()),
            ("file", pa.string()),
            ("locator", pa.string()),
            ("reason", pa.string()),
            ("detail", pa.string()),
        ]
    )
