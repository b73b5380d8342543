import math

import pytest

from selfalign.stages.curate.rows import (
    finish_row,
    parse_score,
    passes,
    request_row,
    score_distribution,
    spearman,
)


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("The answer is good.\nScore: 4", 4),
        ("Score: 2\nOn reflection it is better.\nScore: 5", 5),  # the last one wins
        ("**Score:** 3/5", 3),
        ("score - 1", 1),
        ("Score: 10502", None),  # the reimplementation's stray values
        ("Score: 4.5", None),
        ("Score: 0", None),
        ("Score: 6", None),
        ("I'd give it a 4", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


def lp(token, p):
    return {"token": token, "token_id": 0, "logprob": math.log(p)}


def test_score_distribution_merges_space_variants_and_renormalises():
    dist = score_distribution(
        [lp(" 5", 0.4), lp("5", 0.1), lp(" 4", 0.25), lp(" the", 0.2), lp("1", 0.05)]
    )
    assert dist["mass"] == pytest.approx(0.8)
    assert dist["probs"] == pytest.approx([0.0625, 0, 0, 0.3125, 0.625])
    assert dist["score"] == 5
    assert dist["expected"] == pytest.approx(1 * 0.0625 + 4 * 0.3125 + 5 * 0.625)


def test_score_distribution_without_score_tokens():
    assert score_distribution([lp(" the", 0.9)])["score"] is None
    assert score_distribution(None)["mass"] == 0.0


def test_passes():
    assert passes(5, 4.6, min_score=5)
    assert not passes(4, 4.4, min_score=5)
    assert passes(4, 4.6, min_score=None, min_expected=4.5)
    assert not passes(5, 4.4, min_score=5, min_expected=4.5)
    assert not passes(None, None, min_score=1)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486832980505138)


def test_request_row_never_raises():
    assert (
        request_row(
            {"id": 1, "instruction": None, "response": "x"}, mode="logprobs", scorer_format="seed"
        )["messages"]
        == []
    )
    ok = request_row(
        {"id": 1, "instruction": "Q", "response": "A"}, mode="logprobs", scorer_format="seed"
    )
    assert ok["messages"][-1] == {"role": "assistant", "content": "Score:"}


def test_finish_row_logprobs_and_generate_and_errors():
    base = {"id": "p1", "instruction": "Q", "response": "A", "messages": [], "prompt": None}
    row = finish_row({**base, "top_logprobs": [lp(" 4", 0.9)], "error": None}, mode="logprobs")
    assert (row["score"], row["reject_reason"]) == (4, None)
    assert "messages" not in row and "top_logprobs" not in row and row["instruction"] == "Q"
    row = finish_row({**base, "top_logprobs": [lp(" the", 0.9)], "error": None}, mode="logprobs")
    assert row["reject_reason"] == "no score token"
    row = finish_row({**base, "generated_text": "fine.\nScore: 3", "error": None}, mode="generate")
    assert (row["score"], row["expected_score"], row["curation_output"]) == (
        3,
        3.0,
        "fine.\nScore: 3",
    )
    row = finish_row({**base, "generated_text": "Score: 10502", "error": None}, mode="generate")
    assert row["reject_reason"] == "unparseable score" and row["curation_output"] == "Score: 10502"
    row = finish_row(
        {**base, "error": "invalid row: messages must be a non-empty list"}, mode="logprobs"
    )
    assert row["reject_reason"] == "invalid input"
    row = finish_row({**base, "error": "VLLMValidationError: too long"}, mode="logprobs")
    assert row["reject_reason"] == "engine error" and "too long" in row["reject_detail"]


def test_score_prefix_follows_the_tokenizer():
    from selfalign.stages.curate.rows import score_prefix_for

    # SmolLM2 / Llama-2 style: the space is its own token, so it belongs to the pre-fill.
    assert score_prefix_for(["Score", ":", " ", "3"]) == "Score: "
    # Llama-3 style: " 3" is one token; the digit's token carries the space.
    assert score_prefix_for(["Score", ":", " 3"]) == "Score:"
    assert score_prefix_for([]) == "Score:"


def test_logprobs_request_ends_with_the_given_prefix():
    from selfalign.stages.curate.rows import request_messages

    messages = request_messages("Q", "A", mode="logprobs", score_prefix="Score: ")
    assert messages[-1] == {"role": "assistant", "content": "Score: "}
