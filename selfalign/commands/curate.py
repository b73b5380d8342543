"""``selfalign curate``: the current model rates each (instruction, response) pair 1-5.

Input: pair rows (``id``, ``instruction``, ``response``; e.g. backtranslate's ``data/``:
rows it rejected are skipped). Output: ``data/`` with ``score``, ``expected_score``,
``score_probs`` (logprobs mode), ``curation_output`` (generate mode), ``reject_reason``;
``rejects/``; ``selected/`` (the pairs that pass the selection); ``_manifest.json``.
Resumable like every stage; changing only the selection re-selects without rescoring.

    selfalign curate --input runs/A/data --output runs/A_scored_m0 --model runs/m0 \
        selection.min_expected=4.5
"""

from __future__ import annotations

import argparse
import functools
import json

from selfalign.commands.common import (
    STAGE_FLAGS,
    add_stage_arguments,
    flag_overrides,
    run_engine_stage,
    setup_logging,
)
from selfalign.config import CurateConfig, SelectionSettings, build_config


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign curate", description=__doc__)
    add_stage_arguments(parser, "pair rows")
    parser.add_argument("--mode", choices=["logprobs", "generate"], help="scoring mode")
    return parser


def _to_request(row, *, mode, scorer_recipe, score_prefix):
    from selfalign.curation import request_row

    return request_row(row, mode=mode, scorer_recipe=scorer_recipe, score_prefix=score_prefix)


def detect_score_prefix(model_ref: str) -> str:
    """Ask the scorer's own tokenizer where the score digit starts (see score_prefix_for)."""
    from transformers import AutoTokenizer

    from selfalign.curation import score_prefix_for
    from selfalign.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model_ref).path)
    ids = tokenizer.encode("Score: 3", add_special_tokens=False)
    return score_prefix_for([tokenizer.decode([i]) for i in ids])


def _to_result(row, *, mode):
    from selfalign.curation import finish_row

    return finish_row(row, mode=mode)


def _passes_row(row, *, min_score, min_expected) -> bool:
    from selfalign.curation import passes

    return row["reject_reason"] is None and passes(
        row["score"], row["expected_score"], min_score=min_score, min_expected=min_expected
    )


def select(output: str, selection: SelectionSettings) -> dict:
    """Write the pairs that pass ``selection`` to ``<output>/selected``; returns counts."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import ray

    from selfalign.runtime import io

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


def run(config: CurateConfig, *, overwrite: bool = False) -> dict:
    if config.mode == "logprobs" and config.score_prefix is None:
        # Resolved before the stage runs, so the saved config says what was used.
        config = config.model_copy(update={"score_prefix": detect_score_prefix(config.model)})
    manifest = run_engine_stage(
        "curate",
        config,
        operation=config.mode,
        to_requests=functools.partial(
            _to_request,
            mode=config.mode,
            scorer_recipe=config.scorer_recipe,
            score_prefix=config.score_prefix or "Score:",
        ),
        to_results=functools.partial(_to_result, mode=config.mode),
        overwrite=overwrite,
        skip_rejected_input=True,
    )
    return {**manifest, **select(config.output, config.selection)}


def main(args: argparse.Namespace) -> int:
    setup_logging()
    overrides = flag_overrides(args, {**STAGE_FLAGS, "mode": "mode"})
    config = build_config(CurateConfig, args.config, overrides)
    print(json.dumps(run(config, overwrite=args.overwrite), indent=2))
    return 0
