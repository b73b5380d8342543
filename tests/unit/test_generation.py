import pytest

from selfalign.engine.rows import (
    ENGINE_ERROR,
    ORIGINAL_PROMPT,
    PRE_ERROR,
    SAMPLING_KEYS,
    RowError,
    finish_response,
    merge_sampling,
    prepare_request,
    top_logprobs,
)

DEFAULTS = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 32, "seed": None, "stop": []}


def render(messages):
    return "|".join(f"{m['role']}:{m['content']}" for m in messages) + "|assistant:"


def prepare(row, **kwargs):
    return prepare_request(row, render_chat=render, sampling_defaults=DEFAULTS, **kwargs)


def test_every_request_has_the_full_sampling_schema():
    a = prepare({"prompt": "hi"})
    b = prepare({"prompt": "hi", "sampling_params": {"max_tokens": 5}})
    assert set(a["sampling_params"]) == set(b["sampling_params"]) == set(SAMPLING_KEYS)
    assert a["sampling_params"]["max_tokens"] == 32
    assert b["sampling_params"]["max_tokens"] == 5
    assert b["sampling_params"]["temperature"] == 0.7


def test_messages_are_rendered_with_the_given_template():
    row = prepare({"messages": [{"role": "user", "content": "Q"}]})
    assert row["prompt"] == "user:Q|assistant:"
    assert row[PRE_ERROR] is None


def test_logprobs_operation_forces_one_greedy_token():
    row = prepare(
        {"prompt": "x", "sampling_params": {"max_tokens": 99, "temperature": 1.0}},
        operation="logprobs",
        logprobs_top_k=7,
    )
    params = row["sampling_params"]
    assert (params["max_tokens"], params["temperature"], params["logprobs"]) == (1, 0.0, 7)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({}, "neither"),
        ({"prompt": ""}, "neither"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "both"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "b"}]}, "role"),
        ({"messages": [{"role": "user", "content": 3}]}, "content"),
        ({"prompt": "a", "sampling_params": {"temperature": -1}}, "temperature"),
        ({"prompt": "a", "sampling_params": {"top_p": 0}}, "top_p"),
        ({"prompt": "a", "sampling_params": {"max_tokens": 0}}, "max_tokens"),
        ({"prompt": "a", "sampling_params": {"max_tokens": 2.5}}, "max_tokens"),
        ({"prompt": "a", "sampling_params": {"temprature": 1}}, "unknown"),
        ({"prompt": "a", "sampling_params": "{not json"}, "JSON"),
        ({"prompt": "a", "sampling_params": {"n": 2}}, "n must be 1"),
        ({"prompt": "a", "sampling_params": {"temperature": "hot"}}, "number"),
    ],
)
def test_bad_rows_never_raise_and_carry_a_reason(row, reason):
    out = prepare(row)
    assert out[PRE_ERROR] and reason in out[PRE_ERROR]
    # Still a valid, trivial request so the engine stage's schema holds.
    assert out["prompt"] and out["sampling_params"]["max_tokens"] == 1
    final = finish_response({**out, "generated_text": "junk", ENGINE_ERROR: ""})
    assert final["error"] == out[PRE_ERROR]
    assert final["generated_text"] is None


def test_sampling_params_as_json_string_and_arrow_nulls():
    params = merge_sampling(DEFAULTS, '{"max_tokens": 3}', operation="generate", logprobs_top_k=1)
    assert params["max_tokens"] == 3
    # Arrow struct columns carry every field; absent ones arrive as None and mean "default".
    params = merge_sampling(
        DEFAULTS, {"max_tokens": None, "seed": 4}, operation="generate", logprobs_top_k=1
    )
    assert params["max_tokens"] == 32 and params["seed"] == 4


def test_merge_sampling_rejects_non_mapping():
    with pytest.raises(RowError):
        merge_sampling(DEFAULTS, [1, 2], operation="generate", logprobs_top_k=1)


def test_finish_response_restores_prompt_and_drops_internals():
    request = prepare({"id": 1, "messages": [{"role": "user", "content": "Q"}], "extra": "kept"})
    engine_row = {
        **request,
        "generated_text": "A",
        "num_input_tokens": 4,
        "num_generated_tokens": 1,
        "generated_tokens": [5],
        ENGINE_ERROR: "",
    }
    out = finish_response(engine_row)
    assert out["prompt"] is None  # the rendered template is not leaked
    assert out["extra"] == "kept" and out["id"] == 1
    assert out["generated_text"] == "A" and out["error"] is None
    assert not any(k.startswith("__") for k in out) and ORIGINAL_PROMPT not in out
    assert "sampling_params" not in out and "generated_tokens" not in out


def test_engine_error_lands_in_error_column():
    request = prepare({"prompt": "x" * 10})
    out = finish_response({**request, ENGINE_ERROR: "ValueError: too long"})
    assert out["error"] == "ValueError: too long"
    assert out["prompt"] == "x" * 10


def test_top_logprobs_sorted_and_truncated():
    logprobs = [
        {
            11: {"logprob": -2.0, "decoded_token": "b"},
            7: {"logprob": -0.1, "decoded_token": "a"},
            3: {"logprob": -5.0, "decoded_token": "c"},
        }
    ]
    top = top_logprobs(logprobs, 2)
    assert [e["token"] for e in top] == ["a", "b"]
    assert top[0] == {"token": "a", "token_id": 7, "logprob": -0.1}
    assert top_logprobs(None) == [] and top_logprobs([]) == []


def test_logprobs_operation_output_columns():
    request = prepare({"prompt": "p"}, operation="logprobs", logprobs_top_k=2)
    out = finish_response(
        {
            **request,
            "generated_text": " 5",
            "num_input_tokens": 1,
            "num_generated_tokens": 1,
            "logprobs": [{9: {"logprob": -0.3, "decoded_token": " 5"}}],
            ENGINE_ERROR: "",
        },
        operation="logprobs",
        logprobs_top_k=2,
    )
    assert out["top_logprobs"] == [{"token": " 5", "token_id": 9, "logprob": -0.3}]


def test_arrow_style_values_are_normalised_to_exact_types():
    # Arrow/numpy turn an int column with nulls into float64 (7 -> 7.0, null -> NaN).
    # vLLM's engine core rejects a float seed by dying, so types must be exact.
    import numpy as np

    params = merge_sampling(
        DEFAULTS,
        {
            "seed": 7.0,
            "max_tokens": float("nan"),
            "temperature": np.float32(0.5),
            "stop": np.array(["\n"]),
            "ignore_eos": np.bool_(True),
        },
        operation="generate",
        logprobs_top_k=1,
    )
    assert params["seed"] == 7 and type(params["seed"]) is int
    assert params["max_tokens"] == 32 and type(params["max_tokens"]) is int  # NaN = absent
    assert params["temperature"] == 0.5 and type(params["temperature"]) is float
    assert params["stop"] == ["\n"] and params["ignore_eos"] is True
    assert (
        type(
            merge_sampling(
                DEFAULTS, {"max_tokens": np.int64(4)}, operation="generate", logprobs_top_k=1
            )["max_tokens"]
        )
        is int
    )


@pytest.mark.parametrize(
    "bad", [{"seed": 7.5}, {"seed": "7"}, {"stop": [1]}, {"ignore_eos": "yes"}]
)
def test_non_integral_or_wrong_types_are_rejected(bad):
    with pytest.raises(RowError):
        merge_sampling(DEFAULTS, bad, operation="generate", logprobs_top_k=1)


def test_seed_is_never_null_and_is_stable_per_prompt():
    a = prepare({"prompt": "same"})["sampling_params"]["seed"]
    b = prepare({"prompt": "same"})["sampling_params"]["seed"]
    c = prepare({"prompt": "other"})["sampling_params"]["seed"]
    assert isinstance(a, int) and a == b and a != c
    # An explicit seed wins; the run's seed changes the derived ones.
    assert (
        prepare({"prompt": "same", "sampling_params": {"seed": 3}})["sampling_params"]["seed"] == 3
    )
    other_run = prepare_request(
        {"prompt": "same"}, render_chat=render, sampling_defaults={**DEFAULTS, "seed": 1}
    )["sampling_params"]["seed"]
    assert other_run not in (a, 1)  # the run seed feeds the derivation, not every row
    assert prepare({})["sampling_params"]["seed"] == 0  # invalid rows too: never null


@pytest.mark.parametrize("operation", ["generate", "logprobs"])
def test_valid_and_invalid_requests_have_the_same_null_pattern(operation):
    # Ray Data stores rows as Arrow between stages: a field that is null in some rows and
    # an int in others comes back as float, which kills vLLM's engine core. So within one
    # run, every sampling field is either always null or never null.
    rows = [
        {"prompt": "ok"},
        {"prompt": "ok", "sampling_params": {"seed": 3, "max_tokens": 2}},
        {"prompt": None},
        {"prompt": "x", "sampling_params": {"temperature": -1}},
    ]
    patterns = {
        tuple(
            sorted(
                (k, v is None)
                for k, v in prepare(r, operation=operation)["sampling_params"].items()
            )
        )
        for r in rows
    }
    assert len(patterns) == 1
