"""The scoring service's request and response bodies, and its refusals (pure).

Requests are strict (unknown keys and non-string values are 422s); ``check_rows``
bounds batch size and field lengths (413). No ray/vllm/torch imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator


class ServeError(Exception):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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
