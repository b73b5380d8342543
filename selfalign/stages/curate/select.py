"""The selection: which scored pairs are kept (``<output>/selected``)."""

from __future__ import annotations

import functools

from selfalign.core import io
from selfalign.stages.curate.config import SelectionSettings
from selfalign.stages.curate.rows import passes


def _passes_row(row, *, min_score, min_expected) -> bool:
    return row["reject_reason"] is None and passes(
        row["score"], row["expected_score"], min_score=min_score, min_expected=min_expected
    )


def select(output: str, selection: SelectionSettings) -> dict:
    """Write the pairs that pass ``selection`` to ``<output>/selected``; returns counts."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import ray

    base = output.rstrip("/")
    io.clear_output(f"{base}/selected")
    filesystem, data_path = io.filesystem_for(f"{base}/data")
    # Exists even when nothing passes: an empty selection is a result, not an error.
    filesystem.create_dir(io.filesystem_for(f"{base}/selected")[1], recursive=True)
    if not io.list_output_files(f"{base}/data"):
        return {"selected": 0, "selection": selection.model_dump()}
    expr = pc.field("reject_reason").is_null()
    if selection.min_score is not None:
        expr &= pc.field("score") >= selection.min_score
    if selection.min_expected is not None:
        expr &= pc.field("expected_score") >= selection.min_expected
    if selection.top_n is None:
        # A streaming filter: never holds the scored set in memory.
        _, selected_path = io.filesystem_for(f"{base}/selected")
        dataset = io.parquet_dataset(f"{base}/data")
        pads.write_dataset(
            dataset.filter(expr),
            selected_path,
            filesystem=filesystem,
            format="parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
    else:
        # Top-N needs a global order: Ray Data's distributed sort.
        keep = functools.partial(
            _passes_row, min_score=selection.min_score, min_expected=selection.min_expected
        )
        ds = ray.data.read_parquet(data_path, filesystem=filesystem).filter(keep)
        ds = ds.sort("expected_score", descending=True).limit(selection.top_n)
        ds.write_parquet(f"{base}/selected")
    selected = pads.dataset(
        io.filesystem_for(f"{base}/selected")[1], filesystem=filesystem, format="parquet"
    ).count_rows()
    return {"selected": selected, "selection": selection.model_dump()}
