"""A training mix: parts of pair sets, each tagged with its source (pyarrow only).

Each part reads ``id``, ``instruction``, ``response`` (and ``messages`` when it has
them), drops rows rejected upstream (``reject_reason`` set), optionally keeps a seeded
random sample as large as another set, and tags every row with the part's ``source``
(the tag the curated chat format turns into a system prompt). Output: ``<output>/data``.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from selfalign.core import io
from selfalign.core.config import Strict

COLUMNS = ("id", "instruction", "response")


class SampleSettings(Strict):
    """Keep a random sample of a part, as many rows as ``size_of`` holds (an ablation)."""

    size_of: str = Field(..., description="A Parquet directory whose row count is the size.")
    seed: int = Field(0, description="Seed of the random sample.")


class MixPart(Strict):
    input: str = Field(..., description="Pair rows (Parquet directory).")
    source: str = Field(..., description="The tag every row of this part gets.")
    sample: SampleSettings | None = None


class MixConfig(Strict):
    parts: list[MixPart] = Field(..., min_length=1)
    output: str = Field(..., description="Writes data/ under here.")


def random_sample_ids(ids: list[str], size: int, seed: int) -> list[str]:
    """An equal-size random sample for an ablation, independent of any score."""
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"ablation:{seed}:{i}".encode()).hexdigest())
    return ranked[:size]


def run(config: MixConfig) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    rows: list[dict] = []
    counts: dict[str, int] = {}
    with_messages = False
    for part in config.parts:
        table = io.read_table(part.input, columns=[*COLUMNS, "messages", "reject_reason"])
        if table.num_rows == 0:  # nothing selected (or scored): the part adds nothing
            table = pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
        if "reject_reason" in table.column_names:
            table = table.filter(pc.field("reject_reason").is_null())
        if part.sample is not None:
            size = io.read_table(part.sample.size_of, columns=["id"]).num_rows
            chosen = random_sample_ids(table.column("id").to_pylist(), size, part.sample.seed)
            table = table.filter(
                pc.is_in(table.column("id"), value_set=pa.array(chosen, pa.string()))
            )
        keep = [*COLUMNS, *(["messages"] if "messages" in table.column_names else [])]
        with_messages |= "messages" in table.column_names
        rows += [{**row, "source": part.source} for row in table.select(keep).to_pylist()]
        counts[part.source] = counts.get(part.source, 0) + table.num_rows
    if with_messages:
        for row in rows:
            row.setdefault("messages", None)
    io.write_table(f"{config.output.rstrip('/')}/data", pa.Table.from_pylist(rows))
    return {**counts, "rows": len(rows)}
