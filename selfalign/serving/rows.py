"""What a scoring or backtranslation request means, as engine rows (pure).

A pair is scored exactly as ``selfalign curate`` scores it: the curate stage's
``request_row`` builds the conversation, ``engine.rows.prepare_request`` renders it and
fixes the sampling, the engine's output is put back into the row shape Ray Data's vLLM
stage produces (``engine_row``), and ``finish_response`` + the stage's ``finish_row``
turn it into the result. Backtranslation likewise reuses the backtranslate stage's rows.
No ray/vllm/torch imports: ``selfalign.serving.runner`` plugs these into vLLM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from selfalign.engine.rows import ENGINE_ERROR, PRE_ERROR, finish_response, prepare_request
from selfalign.stages.backtranslate import rows as backtranslate_rows
from selfalign.stages.curate import rows as curate_rows


def score_request(
    row: dict[str, Any],
    *,
    mode: str,
    scorer_format: str,
    score_prefix: str,
    render_chat: Callable[[list[dict[str, str]]], str],
    sampling_defaults: Mapping[str, Any],
    logprobs_top_k: int,
) -> dict[str, Any]:
    """A pair -> the engine request row, built exactly as ``selfalign curate`` builds it."""
    request = curate_rows.request_row(
        row, mode=mode, scorer_format=scorer_format, score_prefix=score_prefix
    )
    return prepare_request(
        request,
        render_chat=render_chat,
        sampling_defaults=sampling_defaults,
        operation=mode,
        logprobs_top_k=logprobs_top_k,
    )


def backtranslate_request(
    row: dict[str, Any],
    *,
    render_chat: Callable[[list[dict[str, str]]], str],
    sampling_defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """A segment -> the engine request row, as ``selfalign backtranslate`` builds it."""
    return prepare_request(
        backtranslate_rows.safe_request_row(row),
        render_chat=render_chat,
        sampling_defaults=sampling_defaults,
        operation="generate",
    )


def engine_row(
    request: dict[str, Any],
    *,
    generated_text: str | None = None,
    num_input_tokens: int = 0,
    num_generated_tokens: int = 0,
    logprobs: list[dict[int, dict[str, Any]]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """Engine output merged into the request row in the shape Ray Data's vLLM stage gives
    it (``logprobs``: per generated position, token id -> ``{logprob, decoded_token}``;
    ``__inference_error__``), so that the batch stage's finishing functions apply as is."""
    return {
        **request,
        "generated_text": generated_text,
        "num_input_tokens": num_input_tokens,
        "num_generated_tokens": num_generated_tokens,
        "logprobs": logprobs,
        ENGINE_ERROR: error or "",
    }


def needs_engine(request: dict[str, Any]) -> bool:
    """False for a row ``prepare_request`` already marked invalid (nothing to run)."""
    return not request.get(PRE_ERROR)


def finish_score(row: dict[str, Any], *, mode: str, logprobs_top_k: int) -> dict[str, Any]:
    """Engine row -> public score result (the curate stage's ``finish_row`` columns)."""
    finished = curate_rows.finish_row(
        finish_response(row, operation=mode, logprobs_top_k=logprobs_top_k), mode=mode
    )
    probs = finished.get("score_probs")
    return {
        "id": finished.get("id"),
        "score": finished.get("score"),
        "expected_score": finished.get("expected_score"),
        "score_probs": list(probs) if probs is not None else None,
        "score_mass": finished.get("score_mass"),
        "reasoning": finished.get("curation_output"),
        "reject_reason": finished.get("reject_reason"),
        "reject_detail": finished.get("reject_detail"),
    }


def finish_backtranslate(row: dict[str, Any]) -> dict[str, Any]:
    """Engine row -> public backtranslation result (the stage's ``finish_row`` columns)."""
    finished = backtranslate_rows.finish_row(finish_response(row, operation="generate"))
    return {
        "id": finished.get("id"),
        "instruction": finished.get("instruction"),
        "raw_instruction": finished.get("raw_instruction"),
        "reject_reason": finished.get("reject_reason"),
        "reject_detail": finished.get("reject_detail"),
    }


async def run_rows(
    requests: list[dict[str, Any]],
    generate: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Send every valid request to the engine at once (the engine batches them); invalid
    rows skip it. ``generate`` returns an ``engine_row`` and never raises for one row."""
    import asyncio

    async def one(request):
        if not needs_engine(request):
            return engine_row(request)
        return await generate(request)

    return list(await asyncio.gather(*(one(r) for r in requests)))


# --------------------------------------------------------------------------- models
