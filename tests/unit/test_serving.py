"""The scoring service's pure parts: schemas, limits, auth/size guard, rows, pointer."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from selfalign.core import models, pointers
from selfalign.core.errors import ConfigError
from selfalign.core.resources import load_ray_config
from selfalign.engine.rows import prepare_request
from selfalign.serving import guard, schemas
from selfalign.serving import rows as serving_rows
from selfalign.serving.config import ServeConfig, ServeLimits
from selfalign.stages.curate import rows as curation


def fake_render(messages):
    # A stand-in chat template that keeps every message visible in the prompt.
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


# --------------------------------------------------------------------------- schemas


def test_score_request_single_pair_and_batch():
    single = schemas.ScoreRequest.model_validate({"instruction": "Q", "response": "A"})
    assert single.rows() == [{"id": None, "instruction": "Q", "response": "A"}]
    named = schemas.ScoreRequest.model_validate({"id": "x", "instruction": "Q", "response": "A"})
    assert named.rows()[0]["id"] == "x"
    assert single.mode == "logprobs"
    batch = schemas.ScoreRequest.model_validate(
        {"pairs": [{"id": "a", "instruction": "Q", "response": "A"}], "mode": "generate"}
    )
    assert batch.rows() == [{"id": "a", "instruction": "Q", "response": "A"}]


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"instruction": "Q"}, "both instruction and response"),
        ({"instruction": "Q", "response": "A", "pairs": []}, "not both"),
        ({"pairs": []}, "pairs is empty"),
        ({}, "give instruction+response"),
        ({"instruction": 123, "response": "A"}, "valid string"),
        ({"instruction": "Q", "response": "A", "respones": "x"}, "Extra inputs"),
        ({"instruction": "Q", "response": "A", "mode": "vibes"}, "logprobs"),
        ({"pairs": [{"instruction": "Q"}]}, "Field required"),
        ({"pairs": "Q"}, "valid list"),
        ({"id": "x", "pairs": [{"instruction": "Q", "response": "A"}]}, "inside each pair"),
    ],
)
def test_score_request_schema_errors_name_the_problem(body, needle):
    with pytest.raises(ValidationError) as err:
        schemas.ScoreRequest.model_validate(body)
    assert needle in schemas.validation_message(err.value.errors())


def test_backtranslate_request_shapes():
    assert schemas.BacktranslateRequest.model_validate({"text": "T"}).rows() == [
        {"id": None, "text": "T"}
    ]
    for bad in ({}, {"text": "T", "segments": [{"text": "U"}]}, {"segments": []}):
        with pytest.raises(ValidationError):
            schemas.BacktranslateRequest.model_validate(bad)


def test_limits_give_413_with_the_field_named():
    limits = ServeLimits(max_batch=2, max_field_chars=20, max_id_chars=4)
    ok = [{"id": "a", "instruction": "Q", "response": "A"}]
    schemas.check_rows(ok, ("instruction", "response"), limits)
    cases = [
        (ok * 3, "max_batch=2"),
        ([{"id": "a", "instruction": "Q", "response": "x" * 21}], "response has 21"),
        ([{"id": "abcde", "instruction": "Q", "response": "A"}], "id longer"),
    ]
    for rows, needle in cases:
        with pytest.raises(schemas.ServeError) as err:
            schemas.check_rows(rows, ("instruction", "response"), limits)
        assert err.value.status == 413 and needle in err.value.message


def test_validation_message_is_one_readable_line():
    errors = [{"loc": ("body", "pairs", 0, "response"), "msg": "Field required"}] * 12
    text = schemas.validation_message(errors)
    assert text.startswith("pairs.0.response: Field required") and text.endswith("(+2 more)")


# --------------------------------------------------------------------------- auth


def test_bearer_check():
    assert guard.bearer_ok("Bearer s3cret", "s3cret")
    assert guard.bearer_ok("bearer  s3cret ", "s3cret")
    assert not guard.bearer_ok("Bearer s3cre", "s3cret")
    assert not guard.bearer_ok("Basic s3cret", "s3cret")
    assert not guard.bearer_ok(None, "s3cret")
    assert not guard.bearer_ok("", "s3cret")
    assert guard.bearer_ok(None, None)  # open


def test_token_resolution(monkeypatch):
    monkeypatch.delenv(guard.TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match="SELFALIGN_SERVE_TOKEN"):
        guard.resolve_token(None, False)
    assert guard.resolve_token(None, True) is None
    assert guard.resolve_token("cfg", False) == "cfg"
    monkeypatch.setenv(guard.TOKEN_ENV, "env")
    assert guard.resolve_token(None, False) == "env"
    assert guard.resolve_token("cfg", False) == "cfg"
    assert guard.resolve_token("cfg", True) is None  # open wins: explicitly configured


def guarded_client(token="tok", max_bytes=1024, root_path=""):
    app = FastAPI(root_path=root_path)

    @app.post("/v1/echo")
    async def echo(body: dict):
        return {"n": len(json.dumps(body))}

    @app.get("/healthz")
    async def health():
        return {"status": "ok"}

    app.add_middleware(guard.GuardMiddleware, token=token, max_request_bytes=max_bytes)
    return TestClient(app)


def test_guard_requires_the_token_except_on_open_paths():
    client = guarded_client()
    assert client.post("/v1/echo", json={"a": 1}).status_code == 401
    wrong = client.post("/v1/echo", json={"a": 1}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert wrong.json()["error"] == "unauthorized"
    assert client.get("/nowhere").status_code == 401  # unknown paths reveal nothing
    ok = client.post("/v1/echo", json={"a": 1}, headers={"Authorization": "Bearer tok"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200


def test_guard_refuses_large_bodies_declared_or_chunked():
    client = guarded_client(max_bytes=1024)
    auth = {"Authorization": "Bearer tok"}
    big = json.dumps({"a": "x" * 2000})
    declared = client.post("/v1/echo", content=big, headers={**auth, "content-type": "x/json"})
    assert declared.status_code == 413 and "max_request_bytes=1024" in declared.json()["detail"]

    def chunks(data: bytes, size=300):
        for i in range(0, len(data), size):
            yield data[i : i + size]

    chunked = client.post("/v1/echo", content=chunks(big.encode()), headers=auth)
    assert chunked.status_code == 413
    small = json.dumps({"a": "x" * 500}).encode()
    replayed = client.post(
        "/v1/echo", content=chunks(small), headers={**auth, "content-type": "application/json"}
    )
    assert replayed.status_code == 200 and replayed.json()["n"] == len(small)


def test_guard_with_no_token_is_open_and_401_comes_before_413():
    assert guarded_client(token=None).post("/v1/echo", json={}).status_code == 200
    # Unauthenticated clients learn nothing about the limits.
    client = guarded_client(max_bytes=1024)
    assert client.post("/v1/echo", json={"a": "x" * 5000}).status_code == 401


def test_relative_path_strips_the_route_prefix():
    assert guard.relative_path({"path": "/agree/v1/score", "root_path": "/agree"}) == "/v1/score"
    assert guard.relative_path({"path": "/healthz", "root_path": ""}) == "/healthz"
    assert guard.relative_path({"path": "/agree", "root_path": "/agree"}) == "/"


# --------------------------------------------------------------------------- rows


def test_score_request_is_exactly_the_curate_stages_request():
    row = {"id": "p1", "instruction": "How do I boil an egg?", "response": "Boil it."}
    sampling = ServeConfig().scoring_sampling.model_dump()
    got = serving_rows.score_request(
        row,
        mode="logprobs",
        scorer_format="seed",
        score_prefix="Score: ",
        render_chat=fake_render,
        sampling_defaults=sampling,
        logprobs_top_k=20,
    )
    # What the curate stage sends: curation.request_row then the engine's prepare_request.
    stage = prepare_request(
        curation.request_row(row, mode="logprobs", scorer_format="seed", score_prefix="Score: "),
        render_chat=fake_render,
        sampling_defaults=sampling,
        operation="logprobs",
        logprobs_top_k=20,
    )
    assert got == stage
    assert got["prompt"].endswith("<assistant>Score: ")
    params = got["sampling_params"]
    assert params["max_tokens"] == 1 and params["logprobs"] == 20 and params["temperature"] == 0
    assert isinstance(params["seed"], int)  # never null, never a float (vLLM's engine dies)


def test_serve_defaults_are_the_batch_stages_defaults():
    from selfalign.stages.backtranslate.config import BacktranslateConfig
    from selfalign.stages.curate.config import CurateConfig

    curate = CurateConfig(output="x")
    config = ServeConfig()
    assert config.scoring_sampling == curate.sampling
    assert config.logprobs_top_k == curate.logprobs_top_k
    assert config.scorer_format == curate.scorer_format
    assert config.backtranslate_sampling == BacktranslateConfig().sampling


def logprob_position(probs: dict[str, float]) -> list[dict[int, dict]]:
    return [
        {
            i: {"logprob": math.log(p), "rank": i + 1, "decoded_token": tok}
            for i, (tok, p) in enumerate(probs.items())
        }
    ]


def test_engine_row_finishes_like_the_batch_stage():
    request = serving_rows.score_request(
        {"id": "p1", "instruction": "Q?", "response": "A."},
        mode="logprobs",
        scorer_format="seed",
        score_prefix="Score: ",
        render_chat=fake_render,
        sampling_defaults={},
        logprobs_top_k=20,
    )
    row = serving_rows.engine_row(
        request,
        generated_text="4",
        num_input_tokens=30,
        num_generated_tokens=1,
        logprobs=logprob_position({"4": 0.5, "5": 0.25, " 3": 0.15, "the": 0.1}),
    )
    result = serving_rows.finish_score(row, mode="logprobs", logprobs_top_k=20)
    assert result["id"] == "p1" and result["reject_reason"] is None
    assert result["score"] == 4
    assert result["score_probs"] == pytest.approx([0, 0, 0.15 / 0.9, 0.5 / 0.9, 0.25 / 0.9])
    assert result["expected_score"] == pytest.approx((3 * 0.15 + 4 * 0.5 + 5 * 0.25) / 0.9)
    assert result["score_mass"] == pytest.approx(0.9)
    # Engine error -> the stage's reject reason, no score.
    failed = serving_rows.finish_score(
        serving_rows.engine_row(request, error="ValueError: too long"),
        mode="logprobs",
        logprobs_top_k=20,
    )
    assert failed["reject_reason"] == "engine error" and failed["score"] is None
    # Generate mode: the parsed score and the text as reasoning.
    gen = serving_rows.finish_score(
        serving_rows.engine_row(request, generated_text="Clear and direct.\nScore: 5"),
        mode="generate",
        logprobs_top_k=20,
    )
    assert gen["score"] == 5 and gen["reasoning"].endswith("Score: 5")


def test_invalid_rows_never_reach_the_engine():
    requests = [
        serving_rows.score_request(
            row,
            mode="logprobs",
            scorer_format="seed",
            score_prefix="Score:",
            render_chat=fake_render,
            sampling_defaults={},
            logprobs_top_k=20,
        )
        for row in (
            {"id": "ok", "instruction": "Q", "response": "A"},
            # Not reachable through the HTTP schema (strict strings), but the rows
            # are the batch stage's: a non-string field is an invalid row there too.
            {"id": "blank", "instruction": None, "response": "A"},
        )
    ]
    sent = []

    async def generate(request):
        sent.append(request["id"])
        return serving_rows.engine_row(request, logprobs=logprob_position({"5": 1.0}))

    done = asyncio.run(serving_rows.run_rows(requests, generate))
    assert sent == ["ok"]
    results = [serving_rows.finish_score(r, mode="logprobs", logprobs_top_k=20) for r in done]
    assert results[0]["score"] == 5
    assert results[1]["reject_reason"] == "invalid input" and results[1]["score"] is None


def test_backtranslate_rows():
    request = serving_rows.backtranslate_request(
        {"id": "s1", "text": "Bread needs flour, water and time."},
        render_chat=fake_render,
        sampling_defaults=ServeConfig().backtranslate_sampling.model_dump(),
    )
    assert "Bread needs flour" in request["prompt"]
    assert request["sampling_params"]["temperature"] == 0.7
    done = serving_rows.finish_backtranslate(
        serving_rows.engine_row(request, generated_text="Instruction: How is bread made at home?")
    )
    assert done == {
        "id": "s1",
        "instruction": "How is bread made at home?",
        "raw_instruction": "Instruction: How is bread made at home?",
        "reject_reason": None,
        "reject_detail": None,
    }


# --------------------------------------------------------------------------- models


def test_content_id_follows_content(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "config.json").write_text("{}")
    (a / "model.safetensors").write_bytes(b"\0" * 1000)
    first = models.content_id(a)
    assert first == models.content_id(a) and len(first) == 12
    (a / "model.safetensors").write_bytes(b"\0" * 999 + b"\1")
    assert models.content_id(a) != first
    # Large files are sampled at both ends: a change in the last bytes still counts.
    (a / "model.safetensors").write_bytes(b"\0" * 5000)
    before = models.content_id(a, sample_bytes=1000)
    (a / "model.safetensors").write_bytes(b"\0" * 4999 + b"\1")
    assert models.content_id(a, sample_bytes=1000) != before
    assert models.content_id("org/name") != models.content_id("org/other")


def test_publish_and_read_pointer(tmp_path):
    run = str(tmp_path / "run")
    assert pointers.read_pointer(pointers.pointer_uri(run)) is None
    first = pointers.publish_model(run, "/models/m0", scorer_format="seed")
    read = pointers.read_pointer(pointers.pointer_uri(run))
    assert read == first and read["model"] == "/models/m0"
    second = pointers.publish_model(run, "/models/m0")  # same path, republished
    assert pointers.pointer_key(second) != pointers.pointer_key(first)
    backward = pointers.publish_model(run, "/models/myx", role="backward")
    assert pointers.read_pointer(pointers.pointer_uri(run, "backward")) == backward
    assert not list((tmp_path / "run" / "serve").glob("*.tmp"))  # renamed into place


@pytest.mark.parametrize(
    "content",
    ["", "{", "[]", '{"model": ""}', '{"model": 3}', '{"model": "m", "scorer_format": "x"}'],
)
def test_garbled_pointer_is_no_pointer(tmp_path, content):
    path = tmp_path / "current.json"
    path.write_text(content)
    assert pointers.read_pointer(str(path)) is None


def test_serve_config_and_profile():
    with pytest.raises(ValidationError):
        ServeConfig(route_prefix="api")
    with pytest.raises(ValidationError):
        ServeConfig(tokn="x")  # unknown keys are errors
    profiles = load_ray_config().profiles
    assert profiles["local"].serve.max_ongoing_requests > 1
    assert profiles["gpu"].serve.gpus_per_replica == 1
    assert profiles["gpu"].serve.max_replicas >= profiles["gpu"].serve.min_replicas
    assert "s3cret" not in repr(ServeConfig(token="s3cret"))  # never in logs


def test_serving_module_is_pure():
    code = (
        "import sys, selfalign.serving\n"
        "print([m for m in ('vllm', 'torch', 'ray', 'transformers', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_command_builds_its_config():
    from selfalign.cli import build_parser
    from selfalign.cli.serve import load_config

    parser = build_parser()
    args, extra = parser.parse_known_args(
        ["serve", "--model", "runs/m0/model", "--port", "9000", "--open", "limits.max_batch=4"]
    )
    args.overrides = [*(args.overrides or []), *extra]
    config = load_config(args)
    assert (config.model, config.port, config.open) == ("runs/m0/model", 9000, True)
    assert config.limits.max_batch == 4
    args = parser.parse_args(["serve", "--token", "0123"])
    assert load_config(args).token == "0123"  # kept a string, not YAML's int 123
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--token", "t", "--open"])
