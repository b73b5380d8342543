"""Golden tests: the exact rendered prompts. A template change must show up here."""

import pytest

from selfalign.formats import prompts
from selfalign.formats.conversations import SOURCE_TAG_PROMPTS
from selfalign.stages.curate.rows import curation_text, request_messages

GOLDEN_PAIR = (
    "Instruction:\nHow do I boil an egg?\n\nAnswer:\nPut it in boiling water for 8 minutes.\n\n"
)


def test_curate_pair_golden():
    rendered = prompts.render(
        "curate_pair",
        instruction="How do I boil an egg?",
        response="Put it in boiling water for 8 minutes.",
    )
    assert rendered == GOLDEN_PAIR


def test_backtranslate_golden():
    rendered = prompts.render("backtranslate", response="Paris is the capital of France.")
    assert rendered == (
        "Below is a piece of text taken from a web page. Imagine a user asked an AI assistant "
        "something, and this text is the answer the assistant gave. Write the user's request: "
        "one instruction or question, in the user's own voice, that this text answers well. "
        "Reply with the request only.\n\nText:\nParis is the capital of France.\n"
    )


def test_rubric_is_the_shared_prefix_and_has_five_levels():
    rubric = prompts.template("curate_rubric")
    for score in "12345":
        assert f"\n{score}: " in rubric
    a = curation_text("Q1", "A1", "logprobs")
    b = curation_text("Q2 is different", "A2", "logprobs")
    # Everything up to the pair is identical across rows: prefix caching shares it.
    assert a.startswith(rubric) and b.startswith(rubric)
    assert len(rubric) > 1000  # a substantial prefix worth caching
    assert a.endswith('Reply with the score only, as "Score: <1-5>".\n')
    assert curation_text("Q", "A", "generate").endswith('exactly as "Score: <1-5>".\n')


def test_render_rejects_missing_or_extra_fields():
    with pytest.raises(KeyError):
        prompts.render("curate_pair", instruction="x")
    with pytest.raises(KeyError):
        prompts.render("backtranslate", response="x", extra="y")


def test_values_with_braces_are_not_interpreted():
    out = prompts.render("curate_pair", instruction="use {response} here", response='{"a": 1}')
    assert "use {response} here" in out and '{"a": 1}' in out


def test_scorer_conversation_follows_its_training_format():
    # M0 / base model (seed format): no system prompt of ours; the model's template adds its own.
    seed = request_messages("Q", "A", mode="logprobs", scorer_format="seed")
    assert [m["role"] for m in seed] == ["user", "assistant"]
    assert seed[-1]["content"] == "Score:"
    # M1+ (curated format): the AI-assistant source tag it was trained with, single-sourced.
    curated = request_messages("Q", "A", mode="generate", scorer_format="curated")
    assert curated[0] == {"role": "system", "content": SOURCE_TAG_PROMPTS["seed"]}
    assert [m["role"] for m in curated] == ["system", "user"]
