"""Hold out pairs for evaluation: a seeded, order-free split of a pair set (pyarrow only).

Output: ``<output>/train`` and ``<output>/heldout`` (Parquet), disjoint, covering the input.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from selfalign.core import io
from selfalign.core.config import Strict
from selfalign.core.errors import ConfigError


class SplitConfig(Strict):
    input: str = Field(..., description="Pair rows (Parquet directory) with an id column.")
    output: str = Field(..., description="Writes train/ and heldout/ under here.")
    size: int = Field(
        10, ge=1, description="Pairs held out (chosen by a seeded hash of their ids)."
    )
    seed: int = Field(0, description="Changes which pairs are held out.")


def heldout_ids(ids: list[str], size: int, seed: int) -> set[str]:
    """The ``size`` ids held out: the smallest by a seeded hash (stable, order-free).

    >>> sorted(heldout_ids(["a", "b", "c", "d"], 2, 0)) == sorted(heldout_ids(["d", "c", "b", "a"], 2, 0))
    True
    """
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[:size])


def run(config: SplitConfig) -> dict:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = io.read_table(config.input)
    ids = table.column("id").to_pylist()
    if config.size >= len(ids):
        raise ConfigError(
            f"heldout size {config.size} leaves no pairs to train on ({len(ids)} pairs)"
        )
    held = heldout_ids(ids, config.size, config.seed)
    is_held = pc.is_in(table.column("id"), value_set=pa.array(sorted(held), pa.string()))
    base = config.output.rstrip("/")
    io.write_table(f"{base}/train", table.filter(pc.invert(is_held)))
    io.write_table(f"{base}/heldout", table.filter(is_held))
    return {"train": len(ids) - len(held), "heldout": len(held)}
