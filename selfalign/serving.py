"""The scoring service's requests, responses, guards and model pointer (pure).

Everything here is plain Python + pydantic: no ray/vllm/torch imports, so it is
unit-tested in milliseconds. ``selfalign.runtime.serve`` plugs it into Ray Serve + vLLM.

A pair is scored exactly as ``selfalign curate`` scores it: ``curation.request_row``
builds the conversation, ``generation.prepare_request`` renders it and fixes the
sampling, the engine's output is put back into the row shape Ray Data's vLLM stage
produces (``engine_row``), and ``generation.finish_response`` + ``curation.finish_row``
turn it into the result. Backtranslation likewise reuses ``selfalign.backtranslation``.

Model updates: the loop calls ``publish_model(run_dir, model_path)``, which atomically
writes a small JSON pointer (``<run_dir>/serve/current.json``); replicas poll it and
switch engines without failing in-flight requests (see ``selfalign.runtime.serve``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from selfalign import backtranslation, curation
from selfalign.config import ConfigError
from selfalign.generation import ENGINE_ERROR, PRE_ERROR, finish_response, prepare_request

TOKEN_ENV = "SELFALIGN_SERVE_TOKEN"
POINTER_DIR = "serve"
# Paths anyone may read: liveness probes carry no token, and the API description is public.
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class ServeError(Exception):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --------------------------------------------------------------------------- schemas


class _Body(BaseModel):
    # Unknown keys are errors (a misspelt "respones" must not score an empty pair), and
    # strings are strict: 123 is not silently turned into "123".
    model_config = ConfigDict(extra="forbid")


class PairIn(_Body):
    id: StrictStr | None = Field(None, description="Client row id, echoed back.")
    instruction: StrictStr
    response: StrictStr


class ScoreRequest(_Body):
    """One pair (``instruction`` + ``response``) or a batch (``pairs``)."""

    id: StrictStr | None = Field(None, description="Single pair: client row id, echoed back.")
    instruction: StrictStr | None = None
    response: StrictStr | None = None
    pairs: list[PairIn] | None = Field(None, description="A batch of pairs (non-empty).")
    mode: Literal["logprobs", "generate"] = Field(
        "logprobs",
        description="logprobs: score distribution after 'Score:' (never unparseable); "
        "generate: brief reasoning, then 'Score: N' (returned as reasoning).",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> ScoreRequest:
        single = self.instruction is not None or self.response is not None
        if self.pairs is not None and self.id is not None:
            raise ValueError("id belongs inside each pair of a batch")
        if single and self.pairs is not None:
            raise ValueError("give either instruction+response or pairs, not both")
        if single and (self.instruction is None or self.response is None):
            raise ValueError("a single pair needs both instruction and response")
        if not single and self.pairs is None:
            raise ValueError("give instruction+response, or pairs: [{instruction, response}]")
        if self.pairs is not None and not self.pairs:
            raise ValueError("pairs is empty")
        return self

    def rows(self) -> list[dict[str, Any]]:
        if self.pairs is None:
            return [{"id": self.id, "instruction": self.instruction, "response": self.response}]
        return [p.model_dump() for p in self.pairs]


class SegmentIn(_Body):
    id: StrictStr | None = Field(None, description="Client row id, echoed back.")
    text: StrictStr


class BacktranslateRequest(_Body):
    """One web segment (``text``) or a batch (``segments``)."""

    id: StrictStr | None = Field(None, description="Single segment: client row id, echoed back.")
    text: StrictStr | None = None
    segments: list[SegmentIn] | None = Field(None, description="A batch of segments (non-empty).")

    @model_validator(mode="after")
    def _one_shape(self) -> BacktranslateRequest:
        if (self.text is None) == (self.segments is None):
            raise ValueError("give either text or segments: [{text}]")
        if self.segments is not None and not self.segments:
            raise ValueError("segments is empty")
        if self.segments is not None and self.id is not None:
            raise ValueError("id belongs inside each segment of a batch")
        return self

    def rows(self) -> list[dict[str, Any]]:
        if self.segments is None:
            return [{"id": self.id, "text": self.text}]
        return [s.model_dump() for s in self.segments]


class ModelInfo(BaseModel):
    ref: str = Field(description="The model reference the service was given or published.")
    version: str = Field(description="Short content id of the model's files.")
    role: Literal["current", "backward"] = "current"
    loaded_at: float = Field(description="Unix time the engine became ready.")


class ScoreResult(BaseModel):
    id: str | None = None
    score: int | None = Field(None, description="Argmax (logprobs) or parsed score, 1-5.")
    expected_score: float | None = Field(None, description="Probability-weighted score.")
    score_probs: list[float] | None = Field(None, description="P(1)..P(5), renormalised.")
    score_mass: float | None = Field(None, description="Probability on any score digit.")
    reasoning: str | None = Field(None, description="generate mode: the model's text.")
    reject_reason: str | None = Field(None, description="Why no score (as in curate's data/).")
    reject_detail: str | None = None


class ScoreResponse(BaseModel):
    model: ModelInfo
    mode: Literal["logprobs", "generate"]
    results: list[ScoreResult]


class BacktranslateResult(BaseModel):
    id: str | None = None
    instruction: str | None = None
    raw_instruction: str | None = None
    reject_reason: str | None = None
    reject_detail: str | None = None


class BacktranslateResponse(BaseModel):
    model: ModelInfo
    results: list[BacktranslateResult]


class ModelsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class ErrorResponse(BaseModel):
    error: str
    detail: str | None = None


# --------------------------------------------------------------------------- limits


def check_rows(rows: list[dict[str, Any]], fields: tuple[str, ...], limits: Any) -> None:
    """Batch size and per-field lengths against ``ServeLimits``; ServeError(413) if over."""
    if len(rows) > limits.max_batch:
        raise ServeError(413, f"batch of {len(rows)} rows exceeds max_batch={limits.max_batch}")
    for i, row in enumerate(rows):
        ident = row.get("id")
        if ident is not None and len(ident) > limits.max_id_chars:
            raise ServeError(413, f"row {i}: id longer than {limits.max_id_chars} characters")
        for name in fields:
            if len(row[name]) > limits.max_field_chars:
                raise ServeError(
                    413,
                    f"row {i}: {name} has {len(row[name])} characters, "
                    f"more than max_field_chars={limits.max_field_chars}",
                )


def validation_message(errors: list[Mapping[str, Any]]) -> str:
    """pydantic/FastAPI error list -> one readable line ("body.pairs.0.response: Field required")."""
    parts = []
    for err in errors[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 10} more)" if len(errors) > 10 else ""
    return "; ".join(parts) + more


# --------------------------------------------------------------------------- auth + size guard


def resolve_token(token: str | None, open_access: bool) -> str | None:
    """The token replicas check: the configured one, else ``$SELFALIGN_SERVE_TOKEN``.

    Refusing to start without one (unless ``open``) is deliberate: a scoring service that
    silently came up open because an env var was missing would be a quiet security hole.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not open_access:
        raise ConfigError(
            f"no bearer token: set {TOKEN_ENV} (or token: in the config), "
            "or serve without authentication explicitly with --open / open: true",
        )
    return None if open_access else token


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches ``token`` (constant-time); None = open."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def relative_path(scope: Mapping[str, Any]) -> str:
    """The request path inside the application (Serve mounts apps under a route prefix)."""
    path = scope.get("path", "") or "/"
    root = scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class GuardMiddleware:
    """ASGI middleware: bearer token, then body size, before any route sees the request.

    Runs before FastAPI parses anything, so an unauthenticated or oversized request costs
    no JSON parsing. A body with a Content-Length over the limit is refused at once; a
    chunked body is read up to the limit and then replayed to the application.
    """

    def __init__(self, app: Callable, *, token: str | None, max_request_bytes: int):
        self.app = app
        self.token = token
        self.max_bytes = max_request_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if relative_path(scope) not in OPEN_PATHS and not bearer_ok(
            headers.get("authorization"), self.token
        ):
            await send_json(
                send,
                401,
                {"error": "unauthorized", "detail": "missing or wrong bearer token"},
                extra_headers=[(b"www-authenticate", b'Bearer realm="selfalign"')],
            )
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"error": "bad request", "detail": "bad Content-Length"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, _too_large(self.max_bytes))
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked upload): buffer up to the limit, then replay.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await send_json(send, 413, _too_large(self.max_bytes))
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> dict[str, str]:
    return {"error": "request too large", "detail": f"body exceeds max_request_bytes={limit}"}


async def send_json(send, status: int, body: Any, extra_headers=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# --------------------------------------------------------------------------- scoring rows


def score_request(
    row: dict[str, Any],
    *,
    mode: str,
    scorer_recipe: str,
    score_prefix: str,
    render_chat: Callable[[list[dict[str, str]]], str],
    sampling_defaults: Mapping[str, Any],
    logprobs_top_k: int,
) -> dict[str, Any]:
    """A pair -> the engine request row, built exactly as ``selfalign curate`` builds it."""
    request = curation.request_row(
        row, mode=mode, scorer_recipe=scorer_recipe, score_prefix=score_prefix
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
        backtranslation.safe_request_row(row),
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
    finished = curation.finish_row(
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
    finished = backtranslation.finish_row(finish_response(row, operation="generate"))
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


def content_id(path: str | os.PathLike, *, sample_bytes: int = 8 << 20) -> str:
    """A short id of a model directory's content (12 hex digits).

    Hashes every file's relative name and size, and its bytes: whole files up to
    ``2 * sample_bytes``, the first and last ``sample_bytes`` of larger ones (a 14 GB
    checkpoint is not read in full at every switch; safetensors headers, at the start,
    and the tensors at both ends change whenever the weights do). A hub id (no local
    directory) hashes the name only. Never raises.
    """
    digest = hashlib.blake2b(digest_size=6)
    root = Path(path)
    try:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    except OSError:
        files = []
    if not files:
        digest.update(str(path).encode())
        return digest.hexdigest()
    for file in files:
        try:
            size = file.stat().st_size
            digest.update(f"{file.relative_to(root)}\0{size}\0".encode())
            with file.open("rb") as handle:
                if size <= 2 * sample_bytes:
                    digest.update(handle.read())
                else:
                    digest.update(handle.read(sample_bytes))
                    handle.seek(size - sample_bytes)
                    digest.update(handle.read(sample_bytes))
        except OSError:
            digest.update(f"{file}\0unreadable".encode())
    return digest.hexdigest()


def pointer_uri(run_dir: str, role: Literal["current", "backward"] = "current") -> str:
    """Where ``publish_model`` writes the pointer of ``role`` under a run directory."""
    return f"{str(run_dir).rstrip('/')}/{POINTER_DIR}/{role}.json"


def publish_model(
    run_dir: str,
    model: str,
    *,
    role: Literal["current", "backward"] = "current",
    scorer_recipe: Literal["seed", "curated"] | None = None,
) -> dict[str, Any]:
    """Tell running services to switch to ``model`` (any model reference).

    Writes ``<run_dir>/serve/<role>.json`` atomically (a local file is written beside and
    renamed; an object-store PUT is atomic), so a replica never reads half a pointer.
    ``scorer_recipe``: the recipe ``model`` was trained with (``curated`` for M1+), so
    the service prompts it as the curate stage would. Returns the pointer.
    """
    from selfalign.runtime.io import filesystem_for

    pointer = {
        "model": str(model),
        "scorer_recipe": scorer_recipe,
        "published_at": time.time(),
        # Distinguishes two publishes of the same path (weights overwritten in place).
        "publish_id": uuid.uuid4().hex,
    }
    uri = pointer_uri(run_dir, role)
    filesystem, path = filesystem_for(uri)
    payload = json.dumps(pointer, indent=2).encode()
    parent = path.rsplit("/", 1)[0]
    filesystem.create_dir(parent, recursive=True)
    if "://" in uri and not uri.startswith("file://"):
        with filesystem.open_output_stream(path) as out:
            out.write(payload)
    else:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as out:
            out.write(payload)
        os.replace(tmp, path)
    return pointer


def read_pointer(uri: str) -> dict[str, Any] | None:
    """The pointer at ``uri``, or None when it is missing or unreadable. Never raises."""
    try:
        from selfalign.runtime.io import filesystem_for

        filesystem, path = filesystem_for(uri)
        with filesystem.open_input_stream(path) as handle:
            data = json.loads(handle.read().decode())
    except Exception:  # noqa: BLE001 - a missing or half-written pointer is "no change"
        return None
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
        return None
    if data.get("scorer_recipe") not in (None, "seed", "curated"):
        return None
    return data


def pointer_key(pointer: Mapping[str, Any]) -> str:
    """What identifies one publish: the model and the publish id (or time)."""
    return f"{pointer.get('model')}\0{pointer.get('publish_id') or pointer.get('published_at')}"
