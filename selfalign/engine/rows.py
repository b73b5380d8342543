"""Engine requests and responses as plain rows (pure: no ray/vllm/torch imports).

The runtime engine (``selfalign.engine.processor``) plugs these functions into Ray Data:
``prepare_request`` turns a user row into an engine request row, ``finish_response``
turns the engine's row back into the user's row plus result columns.

Input row (any extra columns pass through untouched):

* ``prompt``: str — sent as-is; or
* ``messages``: list of ``{"role", "content"}`` — rendered with the model's own chat
  template (single-sourced: whatever template the model was trained with);
* ``sampling_params``: optional dict overriding the run's defaults for this row.

Output columns: ``generated_text``, ``num_input_tokens``, ``num_generated_tokens``,
``top_logprobs`` (``logprobs`` operation: the top-k next tokens after the prompt as
``{"token", "token_id", "logprob"}``, best first), and ``error`` (null on success).

A bad row never raises: its reason is carried to the ``error`` column.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

# Keys a row may override. Each output request row carries *all* of them so that the
# Arrow schema is the same for every row (missing struct fields would become nulls
# that vLLM's SamplingParams rejects).
SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "stop",
    "ignore_eos",
    "logprobs",
    "n",
)
_MIN_PROMPT_FOR_INVALID_ROW = " "  # a trivial request; its result is discarded

PRE_ERROR = "__selfalign_error__"  # reason found before the engine ran
ENGINE_ERROR = "__inference_error__"  # set by ray.data.llm for per-row engine failures
ORIGINAL_PROMPT = "__selfalign_original_prompt"  # restored after the engine
INTERNAL_COLUMNS = (
    PRE_ERROR,
    ENGINE_ERROR,
    "sampling_params",
    "prompt_token_ids",
    "generated_tokens",
    "logprobs",
    "prompt_logprobs",
    "metrics",
    "embeddings",
    "request_id",
    "batch_uuid",
    "time_taken_llm",
    "params",
    "__idx_in_batch",
    ORIGINAL_PROMPT,
)


class RowError(ValueError):
    """A row that cannot be turned into an engine request."""


def merge_sampling(
    defaults: Mapping[str, Any],
    overrides: Any,
    *,
    operation: str,
    logprobs_top_k: int,
) -> dict[str, Any]:
    """Defaults + per-row overrides -> the full, fixed-schema sampling dict."""
    params = {
        "temperature": float(defaults.get("temperature", 0.0)),
        "top_p": float(defaults.get("top_p", 1.0)),
        "max_tokens": int(defaults.get("max_tokens", 128)),
        # The run's seed is not copied to every row (that would correlate their random
        # draws); prepare_request derives a per-row seed from it and the prompt.
        "seed": None,
        "stop": list(defaults.get("stop") or []),
        "ignore_eos": bool(defaults.get("ignore_eos", False)),
        "logprobs": None,
        "n": 1,
    }
    if overrides is not None:
        overrides = _as_mapping(overrides)
        unknown = sorted(set(overrides) - set(SAMPLING_KEYS))
        if unknown:
            raise RowError(
                f"unknown sampling_params keys {unknown}; allowed: {list(SAMPLING_KEYS)}"
            )
        for key, value in overrides.items():
            if value is not None:
                params[key] = value
    if operation == "logprobs":
        # Scoring reads the next-token distribution right after the prompt: one
        # greedy token with the top-k alternatives is all the engine must produce.
        params.update(max_tokens=1, temperature=0.0, top_p=1.0, logprobs=logprobs_top_k)
    _check_sampling(params)
    return params


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RowError(f"sampling_params is not valid JSON: {err}") from None
    if not isinstance(value, Mapping):
        raise RowError(f"sampling_params must be a mapping, got {type(value).__name__}")
    # Arrow struct columns carry every field of the column: a field absent from this
    # row arrives as None, or as NaN once numpy has turned an int column into floats.
    return {k: v for k, v in value.items() if not _missing(v)}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


_INT_KEYS = ("max_tokens", "seed", "logprobs", "n")
_FLOAT_KEYS = ("temperature", "top_p")


def _check_sampling(params: dict[str, Any]) -> None:
    """Validate and normalise types in place.

    vLLM's engine core decodes requests with a strict schema: a float seed (``7.0``, as
    Arrow/numpy produce for int columns with nulls) kills the engine process rather than
    failing the row, so every value is coerced to its exact type here.
    """
    for key in _INT_KEYS:
        value = params[key]
        if value is None:
            continue
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RowError(f"sampling_params.{key} must be an integer, got {params[key]!r}")
        params[key] = value
    for key in _FLOAT_KEYS:
        value = params[key]
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise RowError(f"sampling_params.{key} must be a number, got {params[key]!r}")
        params[key] = float(value)
    if params["temperature"] < 0:
        raise RowError("sampling_params.temperature must be >= 0")
    if not 0 < params["top_p"] <= 1:
        raise RowError("sampling_params.top_p must be in (0, 1]")
    if params["max_tokens"] is None or params["max_tokens"] < 1:
        raise RowError(
            f"sampling_params.max_tokens must be a positive integer, got {params['max_tokens']!r}"
        )
    if params["n"] != 1:
        raise RowError("sampling_params.n must be 1 (one output per row)")
    ignore_eos = params["ignore_eos"]
    if hasattr(ignore_eos, "item"):
        ignore_eos = ignore_eos.item()
    if not isinstance(ignore_eos, bool):
        raise RowError(f"sampling_params.ignore_eos must be true/false, got {ignore_eos!r}")
    params["ignore_eos"] = ignore_eos
    stop = params["stop"]
    if hasattr(stop, "tolist"):
        stop = stop.tolist()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list | tuple) or not all(isinstance(x, str) for x in stop):
        raise RowError(f"sampling_params.stop must be a list of strings, got {params['stop']!r}")
    params["stop"] = list(stop)


def validate_messages(messages: Any) -> list[dict[str, str]]:
    if hasattr(messages, "tolist"):  # numpy arrays from Arrow list columns
        messages = messages.tolist()
    if not isinstance(messages, list | tuple) or not messages:
        raise RowError("messages must be a non-empty list of {role, content}")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise RowError(f"messages[{i}] is not a mapping")
        role, content = message.get("role"), message.get("content")
        if role not in ("system", "user", "assistant"):
            raise RowError(f"messages[{i}].role must be system/user/assistant, got {role!r}")
        if not isinstance(content, str):
            raise RowError(f"messages[{i}].content must be a string")
        clean.append({"role": role, "content": content})
    return clean


def prepare_request(
    row: dict[str, Any],
    *,
    render_chat: Callable[[list[dict[str, str]]], str],
    sampling_defaults: Mapping[str, Any],
    operation: str = "generate",
    logprobs_top_k: int = 20,
) -> dict[str, Any]:
    """User row -> engine request row. Never raises: problems go to ``PRE_ERROR``."""
    out = dict(row)
    out[ORIGINAL_PROMPT] = row.get("prompt")
    try:
        prompt = row.get("prompt")
        messages = row.get("messages")
        if isinstance(prompt, str) and prompt:
            if messages is not None and len(messages) > 0:
                raise RowError("row has both 'prompt' and 'messages'; give one")
            text = prompt
        elif messages is not None:
            text = render_chat(validate_messages(messages))
        else:
            raise RowError("row has neither a non-empty 'prompt' nor 'messages'")
        out["sampling_params"] = merge_sampling(
            sampling_defaults,
            row.get("sampling_params"),
            operation=operation,
            logprobs_top_k=logprobs_top_k,
        )
        if out["sampling_params"]["seed"] is None:
            out["sampling_params"]["seed"] = derived_seed(text, sampling_defaults.get("seed"))
        out["prompt"] = text
        out[PRE_ERROR] = None
    except Exception as err:  # noqa: BLE001 - any failure becomes this row's error
        out["prompt"] = _MIN_PROMPT_FOR_INVALID_ROW
        # Same operation settings as the valid rows: every sampling field must have the
        # same null pattern in all rows (see derived_seed for why), so only the values
        # that are never null are changed for this trivial request.
        out["sampling_params"] = merge_sampling(
            {}, None, operation=operation, logprobs_top_k=logprobs_top_k
        )
        out["sampling_params"].update(max_tokens=1, seed=0)
        out[PRE_ERROR] = f"invalid row: {err}"
    return out


def derived_seed(prompt: str, run_seed: int | None) -> int:
    """A row's default sampling seed: a stable hash of the run seed and the prompt.

    Two reasons. A rerun (e.g. after a crash) samples the same text for the same row.
    And the seed column is never null: Ray Data stores rows as Arrow between stages, an
    int column with nulls comes back as floats, and vLLM's engine core dies on a float
    seed instead of failing the row.
    """
    digest = hashlib.blake2b(f"{run_seed or 0}\0{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**31 - 1)


def top_logprobs(logprobs: Any, k: int | None = None) -> list[dict[str, Any]]:
    """vLLM's first-position logprob dict -> ``[{"token", "token_id", "logprob"}]``, best first."""
    if logprobs is None or len(logprobs) == 0:
        return []
    first = logprobs[0]
    if first is None:
        return []
    entries = []
    for token_id, info in dict(first).items():
        if info is None:
            continue
        entries.append(
            {
                "token": info.get("decoded_token") or "",
                "token_id": int(token_id),
                "logprob": float(info["logprob"]),
            }
        )
    entries.sort(key=lambda e: -e["logprob"])
    return entries[:k] if k else entries


def finish_response(
    row: dict[str, Any], *, operation: str = "generate", logprobs_top_k: int | None = None
) -> dict[str, Any]:
    """Engine row -> user row with result columns; internal columns are dropped."""
    error = row.get(PRE_ERROR) or row.get(ENGINE_ERROR) or None
    out = {k: v for k, v in row.items() if k not in INTERNAL_COLUMNS}
    if ORIGINAL_PROMPT in row:  # the rendered chat prompt is an internal detail
        out["prompt"] = row[ORIGINAL_PROMPT]
    if error:
        out.update(generated_text=None, num_input_tokens=None, num_generated_tokens=None)
        if operation == "logprobs":
            out["top_logprobs"] = None
        out["error"] = str(error)
        return out
    out["generated_text"] = row.get("generated_text", "")
    out["num_input_tokens"] = int(row.get("num_input_tokens") or 0)
    out["num_generated_tokens"] = int(row.get("num_generated_tokens") or 0)
    if operation == "logprobs":
        out["top_logprobs"] = top_logprobs(row.get("logprobs"), logprobs_top_k)
    out["error"] = None
    return out
