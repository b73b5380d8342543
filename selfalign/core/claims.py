"""One mechanism for "is this output mine, finished, or someone else's?".

Every job that owns an output location (an engine stage, an ingestion, a training run,
``generate``) claims it with a *manifest*, ``<output>/_manifest.json``::

    {"kind": "curate", "status": "running" | "complete", "fingerprint": "…",
     "settings": {…}, "started": …, "finished": …, …counts of the result}

The fingerprint hashes the settings that change what the job computes (its config minus
``resume_ignore``: placement, output path, selection...). The existing-output policy is
the same everywhere:

* nothing there: a new run;
* a manifest with the same fingerprint: ``complete`` (skip it) or ``resume`` (continue);
* a manifest with another fingerprint, or files and no manifest: refused with
  ``OutputConflict`` (exit status 2) naming what differs, unless ``overwrite``, which
  clears the location first.

The pipeline's step records (``selfalign.pipeline.runner``) use the same ``fingerprint``.
Pure: pyarrow only.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Literal

import pyarrow.fs as pafs
from pydantic import BaseModel

from selfalign.core import io
from selfalign.core.errors import OutputConflict

MANIFEST_NAME = "_manifest.json"

State = Literal["new", "resume", "complete"]


def fingerprint(payload: Any) -> str:
    """A short, stable hash of JSON-able ``payload`` (key order does not matter)."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_of(config: BaseModel) -> dict[str, Any]:
    """The settings of ``config`` that change what it computes (``resume_ignore`` left out)."""
    ignore = set(getattr(config, "resume_ignore", ()))
    return config.model_dump(mode="json", exclude=ignore)


def manifest_uri(output: str) -> str:
    return f"{output.rstrip('/')}/{MANIFEST_NAME}"


def read_manifest(output: str) -> dict[str, Any] | None:
    return io.read_json(manifest_uri(output))


def _holds_files(output: str) -> bool:
    filesystem, path = io.filesystem_for(output)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.File:
        return True
    if info.type != pafs.FileType.Directory:
        return False
    return bool(filesystem.get_file_info(pafs.FileSelector(path, recursive=False)))


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}")
    return out


def check_output(
    output: str, kind: str, settings: dict[str, Any], *, overwrite: bool = False
) -> State:
    """Apply the existing-output policy to ``output`` (no Ray, no input read).

    Returns ``new`` (nothing of this run there; with ``overwrite`` the location was
    cleared), ``resume`` or ``complete``; raises ``OutputConflict`` for another run's output.
    """
    if overwrite:
        io.clear_output(output)
        io.delete_file(manifest_uri(output))
        return "new"
    manifest = read_manifest(output)
    if manifest is None:
        if _holds_files(output):
            raise OutputConflict(
                f"{output} holds files but no {MANIFEST_NAME} (not a selfalign {kind} output, "
                "or one written by an older version); pass --overwrite to replace it or "
                "choose another output"
            )
        return "new"
    key = fingerprint({"kind": kind, "settings": settings})
    if manifest.get("kind") != kind or manifest.get("fingerprint") != key:
        differs = _differences(manifest.get("settings") or {}, settings)
        what = f"differs in: {', '.join(differs[:8])}" if differs else "another kind of run"
        raise OutputConflict(
            f"{output} holds a {manifest.get('kind')} run with other settings ({what}); "
            "pass --overwrite to replace it or choose another output"
        )
    return "complete" if manifest.get("status") == "complete" else "resume"


def begin(output: str, kind: str, settings: dict[str, Any], /) -> dict[str, Any]:
    """Write the ``running`` manifest (kept as is when resuming); returns it."""
    previous = read_manifest(output)
    manifest = {
        "kind": kind,
        "status": "running",
        "fingerprint": fingerprint({"kind": kind, "settings": settings}),
        "settings": settings,
        "started": (previous or {}).get("started") or time.time(),
    }
    io.write_json(manifest_uri(output), manifest)
    return manifest


def complete(output: str, kind: str, settings: dict[str, Any], /, **result: Any) -> dict[str, Any]:
    """Mark ``output`` complete with the run's result counts; returns the manifest."""
    previous = read_manifest(output) or {}
    manifest = {
        **result,
        "kind": kind,
        "status": "complete",
        "fingerprint": fingerprint({"kind": kind, "settings": settings}),
        "settings": settings,
        "started": previous.get("started") or time.time(),
        "finished": time.time(),
    }
    io.write_json(manifest_uri(output), manifest)
    return manifest
