"""The engine on a real local Ray cluster with a real vLLM engine (tiny random Llama)."""

from __future__ import annotations

import pytest

from selfalign.core.resources import StageResources
from selfalign.engine.config import SamplingSettings, VLLMSettings
from selfalign.engine.processor import EngineSpec, run_engine

pytestmark = pytest.mark.integration

# Small: every engine start costs ~20 s (eager, the CPU default) on the tiny model.
RESOURCES = StageResources(cpus_per_actor=1, omp_threads=2, batch_size=8, max_concurrent_batches=2)
VLLM = VLLMSettings(max_model_len=512, cpu_kv_cache_gib=1, max_num_seqs=32)


def spec(model_path: str, **kwargs) -> EngineSpec:
    return EngineSpec(model_path=model_path, resources=RESOURCES, vllm=VLLM, **kwargs)


@pytest.fixture(scope="module")
def generated(ray_cluster, tiny_model_path):
    rows = [
        {"id": i, "prompt": f"Document number {i}: " + "word " * (5 + 7 * i)} for i in range(12)
    ]
    rows += [
        {"id": 100, "messages": [{"role": "user", "content": "Say hello."}]},
        {"id": 101, "prompt": "short", "sampling_params": {"max_tokens": 3}},
        # Same prompt, sampled at temperature 1: equal seeds must agree, another seed differ.
        {"id": 102, "prompt": "seeded", "sampling_params": {"temperature": 1.0, "seed": 7}},
        {"id": 103, "prompt": "seeded", "sampling_params": {"temperature": 1.0, "seed": 7}},
        {"id": 104, "prompt": "seeded", "sampling_params": {"temperature": 1.0, "seed": 8}},
        # Deliberately bad rows: invalid sampling, no prompt, and a prompt longer
        # than max_model_len (rejected inside the vLLM engine itself).
        {"id": 200, "prompt": "bad", "sampling_params": {"temperature": -1.0}},
        {"id": 201, "prompt": None},
        {"id": 202, "prompt": "overflow " * 2000},
    ]
    ds = ray_cluster.data.from_items(rows)
    sampling = SamplingSettings(max_tokens=12, temperature=0.0, ignore_eos=True)
    out = run_engine(ds, spec(tiny_model_path, sampling=sampling)).take_all()
    return {row["id"]: row for row in out}


def test_every_row_comes_back_once(generated):
    assert sorted(generated) == [*range(12), 100, 101, 102, 103, 104, 200, 201, 202]


def test_generate_produces_text_and_token_counts(generated):
    for i in range(12):
        row = generated[i]
        assert row["error"] is None
        assert isinstance(row["generated_text"], str)
        assert row["num_generated_tokens"] == 12  # ignore_eos: exactly max_tokens
        assert row["num_input_tokens"] > 5
    # Longer prompts have more input tokens: the prompt really went through the tokenizer.
    assert generated[11]["num_input_tokens"] > generated[0]["num_input_tokens"] + 50


def test_per_row_sampling_override(generated):
    assert generated[101]["num_generated_tokens"] == 3
    assert generated[102]["generated_text"] == generated[103]["generated_text"]
    assert generated[102]["generated_text"] != generated[104]["generated_text"]


def test_messages_rendered_with_chat_template(generated):
    row = generated[100]
    assert row["error"] is None
    # The SmolLM2 template adds a default system turn: far more tokens than the text.
    assert row["num_input_tokens"] > 15
    assert row["prompt"] is None  # the rendered template is not written out


def test_bad_rows_land_in_the_error_column(generated):
    assert "temperature" in generated[200]["error"]
    assert "neither" in generated[201]["error"]
    # The engine's own rejection (prompt longer than the model's context) is captured per row.
    overflow = generated[202]["error"]
    assert overflow and "invalid row" not in overflow
    for i in (200, 201, 202):
        assert generated[i]["generated_text"] is None
    assert "__inference_error__" not in generated[0]


def test_logprobs_operation(ray_cluster, tiny_model_path):
    rows = [{"id": i, "prompt": f"Rate this answer {i}. Score:"} for i in range(4)]
    out = run_engine(
        ray_cluster.data.from_items(rows),
        spec(tiny_model_path, operation="logprobs", logprobs_top_k=5),
    ).take_all()
    assert sorted(r["id"] for r in out) == [0, 1, 2, 3]
    for row in out:
        assert row["error"] is None
        top = row["top_logprobs"]
        assert len(top) == 5
        logprobs = [e["logprob"] for e in top]
        assert logprobs == sorted(logprobs, reverse=True)
        assert all(lp <= 0 for lp in logprobs)
        # Greedy: the generated token is the most likely one.
        assert row["generated_text"] == top[0]["token"]
