"""Rows as a Ray Dataset, from JSONL or Parquet on any filesystem."""

from __future__ import annotations

from selfalign.core.io import expand_input


def read_rows(uri: str, *, limit: int | None = None):
    """A Ray Dataset of the rows in ``uri`` (JSONL or Parquet; file, directory or glob)."""
    import ray

    filesystem, files, fmt = expand_input(uri)
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, filesystem=filesystem)
    else:
        ds = ray.data.read_json(files, filesystem=filesystem, file_extensions=None)
    return ds.limit(limit) if limit else ds
