"""The source-tag mapping and the conversation each chat format trains on (single-sourced)."""

from __future__ import annotations

import pytest

from selfalign.formats.conversations import (
    SOURCE_TAG_PROMPTS,
    ConversationError,
    backward_user_turn,
    conversation_for,
    prompt_messages,
    source_tag_prompt,
)

PAIR = {"id": "a", "instruction": "Name a colour.", "response": "Blue.", "source": "seed"}


def test_tag_mapping_is_pinned():
    # Golden: changing a tag changes what every trained model and scorer sees.
    # The public reimplementation swapped these two; the assertions name which is which.
    assert SOURCE_TAG_PROMPTS == {
        "seed": "Answer in the style of an AI Assistant.",
        "augmented": "Answer with knowledge from web search.",
    }
    assert "AI Assistant" in source_tag_prompt("seed")
    assert "web search" in source_tag_prompt("augmented")


def test_seed_format_is_instruction_to_response_without_tag():
    assert conversation_for(PAIR, "seed") == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]


def test_backward_format_swaps_input_and_target():
    assert conversation_for(PAIR, "backward") == [
        {"role": "user", "content": backward_user_turn("Blue.")},
        {"role": "assistant", "content": "Name a colour."},
    ]
    # The user turn is the response inside the backtranslation template.
    assert backward_user_turn("Blue.").endswith("Text:\nBlue.\n")


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("seed", "Answer in the style of an AI Assistant."),
        ("augmented", "Answer with knowledge from web search."),
    ],
)
def test_curated_format_puts_the_source_tag_in_the_system_prompt(source, tag):
    messages = conversation_for({**PAIR, "source": source}, "curated")
    assert messages[0] == {"role": "system", "content": tag}
    assert messages[1:] == conversation_for(PAIR, "seed")


def test_curated_without_tags_is_the_ablation():
    assert conversation_for(PAIR, "curated", source_tags=False) == conversation_for(PAIR, "seed")


def test_curated_keeps_an_existing_system_prompt_after_the_tag():
    pair = {
        "source": "augmented",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A"},
        ],
    }
    system = conversation_for(pair, "curated")[0]
    assert system == {
        "role": "system",
        "content": "Answer with knowledge from web search.\n\nBe brief.",
    }


def test_messages_column_is_the_conversation_when_present():
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    pair = {"instruction": "ignored", "response": "ignored", "source": "seed", "messages": turns}
    assert conversation_for(pair, "seed") == turns
    # backward only learns p(instruction | response): the explicit columns win.
    assert conversation_for(pair, "backward")[0]["content"] == backward_user_turn("ignored")
    # ... and without them the first exchange of the conversation is used.
    del pair["instruction"], pair["response"]
    assert conversation_for(pair, "backward") == [
        {"role": "user", "content": backward_user_turn("Hello")},
        {"role": "assistant", "content": "Hi"},
    ]


def test_prompt_messages_is_the_conversation_without_its_reply():
    for chat_format in ("backward", "seed", "curated"):
        assert prompt_messages(PAIR, chat_format) == conversation_for(PAIR, chat_format)[:-1]
    # No reply is needed to prompt a seed or curated model.
    assert prompt_messages({"instruction": "Q?", "source": "seed"}, "curated") == [
        {"role": "system", "content": "Answer in the style of an AI Assistant."},
        {"role": "user", "content": "Q?"},
    ]
    assert prompt_messages({**PAIR, "source": "augmented"}, "curated") == [
        {"role": "system", "content": "Answer with knowledge from web search."},
        {"role": "user", "content": "Name a colour."},
    ]
    # Self-augmentation prompts the backward model with a web segment alone.
    assert prompt_messages({"response": "Some web text."}, "backward") == [
        {"role": "user", "content": backward_user_turn("Some web text.")}
    ]


@pytest.mark.parametrize(
    ("pair", "chat_format", "message"),
    [
        ({"instruction": "", "response": "x", "source": "seed"}, "seed", "instruction"),
        ({"instruction": "x", "response": "y"}, "curated", "source"),
        ({"instruction": "x", "response": "y", "source": "forum"}, "curated", "unknown source"),
        ({"messages": [{"role": "user", "content": "x"}]}, "seed", "last message"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "seed", "unknown role"),
        (PAIR, "dpo", "unknown chat format"),
    ],
)
def test_bad_rows_raise_a_conversation_error(pair, chat_format, message):
    with pytest.raises(ConversationError, match=message):
        conversation_for(pair, chat_format)


def test_the_model_pointer_knows_the_same_scorer_formats():
    # core cannot import formats (it sits below it): the two names must stay equal.
    from typing import get_args

    from selfalign.core import pointers
    from selfalign.formats import conversations

    assert get_args(pointers.ScorerFormat) == get_args(conversations.ScorerFormat)
