"""``metrics.jsonl``: one JSON line per logged step (and run events), written by rank 0."""

from __future__ import annotations

import json
import posixpath
import time
from typing import Any

from selfalign.core import io

METRICS_NAME = "metrics.jsonl"
_FLUSH_S = 5.0


def step_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of logged steps (events such as "started" carry no loss)."""
    return [row for row in rows if "loss" in row]


def read_steps(uri: str) -> list[dict[str, Any]]:
    """The logged steps of a ``metrics.jsonl`` ([] when there is none yet)."""
    return step_rows(io.read_jsonl(uri))


class MetricsLog:
    """Rewritten whole (small; works on object stores), at most every few seconds and at
    every checkpoint, so a crash loses nothing that the resumed run will not write again."""

    def __init__(self, uri: str):
        self.uri = uri
        self.filesystem, self.path = io.filesystem_for(uri)
        self.rows: list[dict] = []
        self._last_flush = 0.0

    def start(self, resumed_from: int | None) -> None:
        if resumed_from is None:
            self.rows = [{"event": "started", "step": 0, "time": time.time()}]
        else:
            # Steps after the checkpoint are about to be trained again.
            self.rows = [r for r in io.read_jsonl(self.uri) if r.get("step", 0) <= resumed_from]
            self.rows.append({"event": "resumed", "step": resumed_from, "time": time.time()})
        self.flush()

    def add(self, row: dict) -> None:
        self.rows.append({**row, "time": round(time.time(), 3)})
        if time.time() - self._last_flush >= _FLUSH_S:
            self.flush()

    def flush(self) -> None:
        self.filesystem.create_dir(posixpath.dirname(self.path), recursive=True)
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(text.encode())
        self._last_flush = time.time()
