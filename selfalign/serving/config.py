"""``selfalign serve`` settings: the service, its limits, and the stages' scoring defaults (pure)."""

from __future__ import annotations

from pydantic import Field, model_validator

from selfalign.core.config import DEFAULT_MODEL, Placement, Strict
from selfalign.engine.config import SamplingSettings, VLLMSettings
from selfalign.formats.conversations import ScorerFormat
from selfalign.stages.backtranslate.config import BacktranslateConfig
from selfalign.stages.curate.config import CurateConfig


class ServeLimits(Strict):
    """Bounds on what one request may carry (larger requests get HTTP 413)."""

    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_batch: int = Field(64, ge=1, description="Most pairs (or segments) in one request.")
    max_field_chars: int = Field(
        16_000, ge=16, description="Longest instruction, response or segment text (characters)."
    )
    max_id_chars: int = Field(256, ge=1, description="Longest client-supplied row id.")


class ServeConfig(Placement):
    """``selfalign serve``: the current model as a Ray Serve scoring service.

    Scoring and backtranslation use the batch stages' own defaults (``CurateConfig`` and
    ``BacktranslateConfig``), so an endpoint score equals the ``selfalign curate`` score
    of the same pair.
    """

    model: str = Field(DEFAULT_MODEL, description="Model reference (see selfalign.core.models).")
    backward_model: str | None = Field(
        None,
        description="Backward model for /v1/backtranslate: a second deployment; None = the "
        "current model's own engine.",
    )
    model_pointer: str | None = Field(
        None,
        description="Pointer file written by selfalign.core.pointers.publish_model (local or object "
        "store); when it exists it names the current model, and replicas switch when it changes.",
    )
    backward_pointer: str | None = Field(
        None, description="Pointer file for the backward model (publish_model(role='backward'))."
    )
    poll_interval_s: float = Field(5.0, gt=0, description="How often replicas read the pointer.")
    drain_timeout_s: float = Field(
        300.0, gt=0, description="After a switch, how long the old engine may finish its requests."
    )
    host: str = Field("127.0.0.1", description="HTTP bind address (0.0.0.0 for a cluster).")
    port: int = Field(8000, ge=1, le=65535)
    route_prefix: str = Field("/", description="Serve route prefix of the application.")
    app_name: str = Field("selfalign", description="Serve application name.")
    token: str | None = Field(
        None,
        repr=False,
        description="Bearer token; default: $SELFALIGN_SERVE_TOKEN (prefer the env var: a "
        "token in a file or on the command line is easy to leak).",
    )
    open: bool = Field(False, description="Serve without authentication (explicit opt-in).")
    scorer_format: ScorerFormat = CurateConfig.model_fields["scorer_format"].default
    logprobs_top_k: int = Field(CurateConfig.model_fields["logprobs_top_k"].default, ge=5, le=100)
    score_prefix: str | None = Field(
        None, description="As in CurateConfig: None = detect from the scorer's tokenizer."
    )
    scoring_sampling: SamplingSettings = CurateConfig.model_fields["sampling"].default
    backtranslate_sampling: SamplingSettings = BacktranslateConfig.model_fields["sampling"].default
    vllm: VLLMSettings = VLLMSettings()
    limits: ServeLimits = ServeLimits()

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.route_prefix.startswith("/"):
            raise ValueError(f"route_prefix must start with '/', got {self.route_prefix!r}")
        return self
