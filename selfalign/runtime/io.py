"""Reading rows from, and writing datasets to, any filesystem pyarrow can open."""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from typing import Any

import pyarrow.fs as pafs

_JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
_PARQUET_SUFFIXES = (".parquet", ".pq")


class InputError(ValueError):
    pass


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path)`` for a local path or a URI (s3://, gs://, file://, ...)."""
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError variants
            raise InputError(f"{uri}: cannot open filesystem: {err}") from err
    import os

    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def row_format(path: str) -> str | None:
    lower = path.lower()
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(_JSON_SUFFIXES):
        return "json"
    return None


def list_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    """The files of a file, a directory or a glob, sorted; any filesystem.

    Directories are walked recursively, skipping hidden and ``_``-prefixed names (side
    files such as ``_selfalign_config.yaml``, checkpoints). Globs match with ``fnmatch``
    under their fixed prefix, where ``*`` also crosses ``/``.
    """
    filesystem, path = filesystem_for(uri)
    if any(ch in path for ch in "*?["):
        base = path
        while any(ch in base for ch in "*?["):
            base = posixpath.dirname(base)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        files = [
            info.path
            for info in filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File and fnmatch.fnmatch(info.path, path)
        ]
    else:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input not found: {uri}")
        if info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(path, recursive=True)
            files = [
                i.path
                for i in filesystem.get_file_info(selector)
                if i.type == pafs.FileType.File
                and not posixpath.basename(i.path).startswith(("_", "."))
            ]
        else:
            files = [path]
    if not files:
        raise InputError(f"no input files match {uri}")
    return filesystem, sorted(files)


def expand_input(uri: str) -> tuple[pafs.FileSystem, list[str], str]:
    """Row files (JSONL or Parquet, one format) of a file, directory or glob."""
    filesystem, files = list_files(uri)
    formats = {row_format(f) for f in files}
    if None in formats:
        unknown = [f for f in files if row_format(f) is None][:3]
        raise InputError(f"unsupported row file type (use .jsonl or .parquet): {unknown}")
    if len(formats) > 1:
        raise InputError(f"{uri}: mixes JSON and Parquet files; give one format")
    return filesystem, files, formats.pop()


def read_rows(uri: str, *, limit: int | None = None):
    """A Ray Dataset of the rows in ``uri`` (JSONL or Parquet; file, directory or glob)."""
    import ray

    filesystem, files, fmt = expand_input(uri)
    if fmt == "parquet":
        ds = ray.data.read_parquet(files, filesystem=filesystem)
    else:
        ds = ray.data.read_json(files, filesystem=filesystem, file_extensions=None)
    return ds.limit(limit) if limit else ds


def absolute(uri: str) -> str:
    """A local path made absolute (URIs unchanged): Ray Data's checkpoints and Ray Train's
    storage refuse relative paths, and workers may run in another directory."""
    if "://" in uri:
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def write_text(uri: str, text: str) -> None:
    """Write a small text file (configs, summaries) to any filesystem."""
    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def write_json(uri: str, payload: Any) -> None:
    write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def list_output_files(uri: str, suffix: str = ".parquet") -> list[str]:
    filesystem, path = filesystem_for(uri)
    info = filesystem.get_file_info(path)
    if info.type != pafs.FileType.Directory:
        return []
    selector = pafs.FileSelector(path, recursive=False)
    return sorted(i.path for i in filesystem.get_file_info(selector) if i.path.endswith(suffix))


def clear_output(uri: str) -> None:
    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type == pafs.FileType.Directory:
        filesystem.delete_dir_contents(path)


def parquet_dataset(uri: str):
    """A directory of Parquet shards as one ``pyarrow.dataset`` with a unified schema.

    A shard whose rows are all null in a column (a batch where every row was rejected)
    stores that column as Arrow's null type; reading with the first shard's schema would
    then fail on the others ("Unsupported cast from int64 to null"), so the schemas of
    all shards are unified first (null promotes to the other shards' type).
    """
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    filesystem, path = filesystem_for(uri)
    files = list_output_files(uri)
    if not files:
        return pads.dataset(pa.table({}), schema=pa.schema([]))
    schemas = [pq.read_schema(f, filesystem=filesystem) for f in files]
    schema = pa.unify_schemas(schemas, promote_options="permissive")
    return pads.dataset(files, filesystem=filesystem, format="parquet", schema=schema)
