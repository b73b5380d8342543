"""Files, JSON records and Parquet shards on any filesystem pyarrow can open.

Small files (configs, manifests, records, pointers) are written atomically: a local file
is written beside its target and renamed, an object-store PUT is atomic by itself, so a
reader never sees half a file. Pure: pyarrow only (Ray Datasets are in ``datasets``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shutil
import uuid
from typing import Any

import pyarrow.fs as pafs

from selfalign.core.errors import InputError

_JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")
_PARQUET_SUFFIXES = (".parquet", ".pq")


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


def absolute(uri: str) -> str:
    """A local path made absolute (URIs unchanged): Ray Data's checkpoints and Ray Train's
    storage refuse relative paths, and workers may run in another directory."""
    if "://" in uri:
        return uri.rstrip("/")
    return os.path.abspath(os.path.expanduser(uri))


def write_text(uri: str, text: str) -> None:
    """Write a small text file (configs, manifests, pointers) atomically, any filesystem."""
    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(posixpath.dirname(path), recursive=True)
    if isinstance(filesystem, pafs.LocalFileSystem):
        staging = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(staging, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(staging, path)
        return
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def write_json(uri: str, payload: Any) -> None:
    write_text(uri, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def is_file(uri: str) -> bool:
    filesystem, path = filesystem_for(uri)
    return filesystem.get_file_info(path).type == pafs.FileType.File


def read_text(uri: str) -> str | None:
    """A small file's text, or None when there is no such file."""
    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def read_json(uri: str) -> Any | None:
    """A JSON file's content, or None when there is no such file."""
    text = read_text(uri)
    return None if text is None else json.loads(text)


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file (``metrics.jsonl``); [] when there is no such file."""
    text = read_text(uri)
    return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


def delete_file(uri: str) -> None:
    filesystem, path = filesystem_for(uri)
    if filesystem.get_file_info(path).type == pafs.FileType.File:
        filesystem.delete_file(path)


def publish_dir(local_dir: str, uri: str) -> None:
    """Copy a finished local directory to ``uri``; locally it appears whole or not at all
    (copied beside the target, then renamed over it)."""
    filesystem, path = filesystem_for(uri)
    if isinstance(filesystem, pafs.LocalFileSystem):
        staging = path + ".tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(local_dir, staging)
        shutil.rmtree(path, ignore_errors=True)
        os.replace(staging, path)
        return
    filesystem.create_dir(path, recursive=True)
    pafs.copy_files(local_dir, path, destination_filesystem=filesystem)


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


def read_table(uri: str, columns: list[str] | None = None):
    """A directory of Parquet shards as one Arrow table; absent columns are left out.

    For the small reads of the pipeline's own steps (splits, mixes, reports).
    """
    dataset = parquet_dataset(uri)
    if columns is not None:
        columns = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=columns)


def write_table(uri: str, table) -> None:
    """Replace the Parquet directory ``uri`` with one shard holding ``table``."""
    import pyarrow.parquet as pq

    clear_output(uri)
    filesystem, path = filesystem_for(uri)
    filesystem.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/part-00000.parquet", filesystem=filesystem)
