"""The scoring service on a real local Ray cluster: real Serve, real HTTP, real vLLM.

One Serve instance for the module (engine start-ups dominate on a 2-core machine): the
``main`` application on the tiny random Llama exercises every route, auth, the limits,
schema errors and a model switch under load; an ``agree`` application on SmolLM2 (with
the tiny model as a separate backward deployment) shows that an endpoint score equals
the ``selfalign curate`` score of the same pair.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pyarrow.dataset as pads
import pytest
import requests

from selfalign.core import pointers
from selfalign.serving import guard
from selfalign.serving.config import ServeConfig, ServeLimits

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

TOKEN = "serve-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Fractional replica CPUs: the main, agree and backward replicas plus the curate
# stage's engine actor must fit on the session's 4 logical CPUs at once.
RAY_CONFIG = """
profiles:
  local:
    device: cpu
    stages:
      default: {min_actors: 1, max_actors: 1, cpus_per_actor: 1, omp_threads: 2,
                batch_size: 8, max_concurrent_batches: 2}
    serve: {min_replicas: 1, max_replicas: 1, target_ongoing_requests: 8,
            max_ongoing_requests: 32, cpus_per_replica: 0.5, omp_threads: 2}
"""
VLLM = {"max_model_len": 1024, "cpu_kv_cache_gib": 1, "max_num_seqs": 32}
LIMITS = ServeLimits(max_request_bytes=64 * 1024, max_batch=8, max_field_chars=4000)
PAIRS = [
    {
        "id": "egg",
        "instruction": "How do I hard-boil an egg?",
        "response": "Boil water, add the egg, cook it for eight minutes, then cool it in "
        "cold water before peeling.",
    },
    {"id": "spam", "instruction": "How do I hard-boil an egg?", "response": "Click here!"},
    {"id": "paris", "instruction": "What is the capital of France?", "response": "Paris."},
    {
        "id": "hash",
        "instruction": "Explain what a hash table is.",
        "response": "A hash table maps keys to slots of an array with a hash function, so a "
        "lookup usually touches one slot.",
    },
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_config_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("serve-config") / "ray_config.yaml"
    path.write_text(RAY_CONFIG)
    return str(path)


@pytest.fixture(scope="module")
def second_tiny_model(tmp_path_factory) -> str:
    """Another random tiny Llama (different seed): the model the loop 'publishes'."""
    from selfalign.core.models import build_tiny_llama

    path = tmp_path_factory.mktemp("tiny-v2") / "model"
    path.mkdir()
    build_tiny_llama(path, seed=1)
    return str(path)


@pytest.fixture(scope="module")
def serve_instance(ray_cluster):
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def main_app(serve_instance, ray_config_path, tmp_path_factory):
    from ray import serve

    from selfalign.serving.app import build_app

    run_dir = str(tmp_path_factory.mktemp("loop-run"))
    config = ServeConfig(
        model="embedded:tiny-random-llama",
        model_pointer=pointers.pointer_uri(run_dir),
        poll_interval_s=0.5,
        token=TOKEN,
        ray_config=ray_config_path,
        vllm=VLLM,
        limits=LIMITS,
        app_name="main",
    )
    serve.run(build_app(config), name="main", route_prefix="/")
    return {"url": serve_instance, "run_dir": run_dir}


def get(app, path, **kwargs):
    return requests.get(app["url"] + path, timeout=120, **kwargs)


def post(app, path, body=None, *, data=None, headers=AUTH, **kwargs):
    if data is None:
        data = json.dumps(body)
    headers = {"content-type": "application/json", **(headers or {})}
    return requests.post(app["url"] + path, data=data, headers=headers, timeout=300, **kwargs)


# --------------------------------------------------------------------------- routes


def test_health_and_openapi_need_no_token(main_app):
    assert get(main_app, "/healthz").json() == {"status": "ok"}
    spec = get(main_app, "/openapi.json").json()
    assert {"/v1/score", "/v1/backtranslate", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert "ScoreRequest" in spec["components"]["schemas"]
    assert "401" in spec["paths"]["/v1/score"]["post"]["responses"]


def test_every_v1_route_needs_the_token(main_app):
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        assert get(main_app, "/v1/models", headers=headers).status_code == 401
        scored = post(main_app, "/v1/score", PAIRS[0], headers=headers)
        assert scored.status_code == 401 and scored.json()["error"] == "unauthorized"
        assert (
            post(main_app, "/v1/backtranslate", {"text": "x"}, headers=headers).status_code == 401
        )
    assert get(main_app, "/v1/models", headers=AUTH).status_code == 200


def test_models_names_the_serving_model(main_app):
    models = get(main_app, "/v1/models", headers=AUTH)
    data = models.json()["data"]
    current = next(m for m in data if m["role"] == "current")
    assert current["ref"] == "embedded:tiny-random-llama"
    assert len(current["version"]) == 12
    assert models.headers["x-selfalign-model"] == f"{current['ref']}@{current['version']}"
    backward = next(m for m in data if m["role"] == "backward")
    assert backward["version"] == current["version"]  # no separate backward model here


def test_score_one_pair_and_a_batch(main_app):
    one = post(main_app, "/v1/score", {k: PAIRS[0][k] for k in ("instruction", "response")})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model"]["ref"] == "embedded:tiny-random-llama" and body["mode"] == "logprobs"
    assert len(body["results"]) == 1
    batch = post(main_app, "/v1/score", {"pairs": PAIRS}).json()
    assert [r["id"] for r in batch["results"]] == [p["id"] for p in PAIRS]  # input order
    for result in batch["results"]:
        # A random model rarely puts a digit in its top-20: then the batch stage's
        # reject reason, never a made-up score.
        if result["reject_reason"] is None:
            assert 1 <= result["score"] <= 5
            assert sum(result["score_probs"]) == pytest.approx(1.0)
        else:
            assert result["reject_reason"] == "no score token" and result["score"] is None


def test_score_generate_mode_returns_reasoning(main_app):
    got = post(main_app, "/v1/score", {**PAIRS[2], "mode": "generate"}).json()
    result = got["results"][0]
    assert got["mode"] == "generate" and result["id"] == "paris"
    assert isinstance(result["reasoning"], str) and result["reasoning"]
    assert (result["score"] is not None) != (result["reject_reason"] == "unparseable score")


def test_backtranslate_one_and_a_batch(main_app):
    text = "Sourdough needs flour, water, salt and a starter. " * 3
    one = post(main_app, "/v1/backtranslate", {"text": text}).json()
    assert one["model"]["role"] == "backward"
    result = one["results"][0]
    assert isinstance(result["raw_instruction"], str)
    assert (result["instruction"] is None) != (result["reject_reason"] is None)
    batch = post(
        main_app, "/v1/backtranslate", {"segments": [{"id": "a", "text": text}, {"text": ""}]}
    )
    results = batch.json()["results"]
    assert [r["id"] for r in results] == ["a", None]
    assert results[1]["reject_reason"] == "invalid input"  # as the batch stage records it


def test_limits_answer_413(main_app):
    too_big = {"instruction": "Q", "response": "x" * (70 * 1024)}
    refused = post(main_app, "/v1/score", too_big)
    assert refused.status_code == 413 and "max_request_bytes" in refused.json()["detail"]
    batch = post(main_app, "/v1/score", {"pairs": [PAIRS[0]] * 9})
    assert batch.status_code == 413 and "max_batch=8" in batch.json()["detail"]
    field = post(main_app, "/v1/score", {"instruction": "Q", "response": "y" * 4001})
    assert field.status_code == 413 and "response" in field.json()["detail"]
    text = post(main_app, "/v1/backtranslate", {"text": "z" * 4001})
    assert text.status_code == 413


@pytest.mark.parametrize(
    "data",
    [
        "{",
        "",
        "null",
        "[]",
        '"text"',
        "\udcff",
        '{"instruction": 1, "response": "x"}',
        '{"instruction": "a", "response": "b", "mode": "vibes"}',
        '{"instruction": "a", "response": "b", "pairs": [{"instruction": "c", "response": "d"}]}',
        '{"pairs": []}',
        '{"pairs": [{"instruction": "a"}]}',
        '{"pairs": {"instruction": "a", "response": "b"}}',
        '{"instruction": "a", "response": 1e999999}',
        '{"instruction": "a", "response": ' + "9" * 6000 + "}",
        "[" * 5000 + "]" * 5000,
        '{"instruction": "a", "response": "b", "extra": true}',
    ],
)
def test_bad_input_is_422_never_500(main_app, data):
    body = data.encode("utf-8", "surrogateescape")
    got = post(main_app, "/v1/score", data=body)
    assert got.status_code == 422, got.text
    assert got.json()["error"] == "invalid request" and got.json()["detail"]


def test_other_bad_requests_are_not_500(main_app):
    assert get(main_app, "/v1/score", headers=AUTH).status_code == 405
    assert get(main_app, "/v1/nothing", headers=AUTH).status_code == 404
    not_json = requests.post(
        main_app["url"] + "/v1/backtranslate",
        data=b'{"text": 1}',
        headers={**AUTH, "content-type": "text/plain"},
        timeout=60,
    )
    assert not_json.status_code == 422


# --------------------------------------------------------------------------- model switch


def test_model_switch_under_load_fails_no_request(main_app, second_tiny_model):
    before = get(main_app, "/v1/models", headers=AUTH).json()["data"][0]
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    got = session.post(
                        main_app["url"] + "/v1/score",
                        json={"pairs": PAIRS[: 1 + i % 3]},
                        headers=AUTH,
                        timeout=300,
                    )
                except requests.RequestException as err:
                    failures.append(repr(err))
                    continue
                if got.status_code != 200:
                    failures.append(f"{got.status_code}: {got.text[:200]}")
                    continue
                seen[i].append(got.json()["model"]["version"])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # traffic on the first model
    pointers.publish_model(main_app["run_dir"], second_tiny_model)
    deadline = time.time() + 300
    new_version = None
    while time.time() < deadline:
        current = get(main_app, "/v1/models", headers=AUTH).json()["data"][0]
        if current["version"] != before["version"]:
            new_version = current["version"]
            break
        time.sleep(0.5)
    time.sleep(3)  # traffic on the new model, while the old engine drains
    stop.set()
    for thread in threads:
        thread.join(timeout=300)

    assert new_version is not None, "the service never switched to the published model"
    assert current["ref"] == second_tiny_model
    assert failures == []
    versions = {v for per_client in seen for v in per_client}
    assert versions == {before["version"], new_version}
    for per_client in seen:
        # Requests from one client are sequential: once it was answered by the new
        # model, the old one never answers it again.
        if new_version in per_client:
            first_new = per_client.index(new_version)
            assert set(per_client[first_new:]) == {new_version}


# --------------------------------------------------------------------------- endpoint == batch


def test_endpoint_score_equals_the_curate_stage_score(serve_instance, ray_config_path, tmp_path):
    from ray import serve

    from selfalign.core.config import build_config
    from selfalign.serving.app import build_app
    from selfalign.stages.curate.config import CurateConfig
    from selfalign.stages.curate.stage import run as run_curate

    config = ServeConfig(
        model="embedded:smollm2-135m-instruct",
        backward_model="embedded:tiny-random-llama",  # a second deployment
        token=TOKEN,
        ray_config=ray_config_path,
        vllm=VLLM,
        limits=LIMITS,
        app_name="agree",
        route_prefix="/agree",
    )
    serve.run(build_app(config), name="agree", route_prefix="/agree")
    app = {"url": serve_instance + "/agree"}
    try:
        # A batch request, and single-pair requests in parallel (batched by the engine).
        batch = post(app, "/v1/score", {"pairs": PAIRS}).json()
        singles: dict[str, dict] = {}

        def one(pair):
            got = post(app, "/v1/score", {k: pair[k] for k in ("instruction", "response")})
            singles[pair["id"]] = got.json()["results"][0]

        threads = [threading.Thread(target=one, args=(p,)) for p in PAIRS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        pairs_file = tmp_path / "pairs.jsonl"
        pairs_file.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
        out = tmp_path / "scored"
        curate = build_config(
            CurateConfig,
            None,
            {
                "input": str(pairs_file),
                "output": str(out),
                "model": "embedded:smollm2-135m-instruct",
                "ray_config": ray_config_path,
                "vllm": VLLM,
                "selection": {"min_score": 1},
            },
        )
        run_curate(curate)
        stage = {
            r["id"]: r for r in pads.dataset(out / "data", format="parquet").to_table().to_pylist()
        }

        assert batch["model"]["ref"] == "embedded:smollm2-135m-instruct"
        for result in batch["results"]:
            expected = stage[result["id"]]
            assert expected["reject_reason"] is None and result["reject_reason"] is None
            assert result["score"] == expected["score"]
            assert result["expected_score"] == pytest.approx(expected["expected_score"], abs=1e-3)
            assert result["score_probs"] == pytest.approx(expected["score_probs"], abs=1e-3)
            single = singles[result["id"]]
            assert single["expected_score"] == pytest.approx(expected["expected_score"], abs=1e-3)
        # A real model separates an answer from spam.
        by_id = {r["id"]: r for r in batch["results"]}
        assert by_id["egg"]["expected_score"] > by_id["spam"]["expected_score"]

        # The backward model is its own deployment, and says so.
        back = post(app, "/v1/backtranslate", {"text": "Sourdough needs a starter. " * 4}).json()
        assert back["model"]["ref"] == "embedded:tiny-random-llama"
        assert back["model"]["version"] != batch["model"]["version"]
        models = {m["role"]: m for m in get(app, "/v1/models", headers=AUTH).json()["data"]}
        assert models["current"]["ref"] == "embedded:smollm2-135m-instruct"
        assert models["backward"]["ref"] == "embedded:tiny-random-llama"
    finally:
        serve.delete("agree")


def test_prometheus_metrics_count_requests(main_app, ray_cluster):
    # Ray exports application metrics from each node's metrics agent.
    port = ray_cluster.nodes()[0]["MetricsExportPort"]
    deadline = time.time() + 90
    text = ""
    while time.time() < deadline:
        try:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except requests.RequestException:
            text = ""
        if "selfalign_serve_requests" in text and 'status="401"' in text:
            break
        time.sleep(3)
    assert "selfalign_serve_requests" in text
    assert 'route="/v1/score"' in text and 'status="413"' in text
    assert "selfalign_serve_latency_seconds_bucket" in text
    assert "selfalign_serve_batch_rows_bucket" in text


def test_build_app_refuses_to_start_without_a_token(monkeypatch, ray_config_path):
    from selfalign.core.errors import ConfigError
    from selfalign.serving.app import build_app

    monkeypatch.delenv(guard.TOKEN_ENV, raising=False)
    with pytest.raises(ConfigError, match="--open"):
        build_app({"ray_config": ray_config_path})
    assert build_app({"ray_config": ray_config_path, "open": True}) is not None
    monkeypatch.setenv(guard.TOKEN_ENV, "from-env")
    assert build_app({"ray_config": ray_config_path}) is not None
