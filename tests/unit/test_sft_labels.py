"""Loss masks built message by message, checked with the real SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from selfalign.formats.conversations import ConversationError, conversation_for
from selfalign.formats.labels import reply_spans, tokenize_conversation

END = "<|im_end|>"

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And times three?\nShow it."},
    {"role": "assistant", "content": "2+2 = 4\n4 x 3 = 12"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


def trained_runs(tokenizer, tokenized) -> list[str]:
    """Decode each contiguous run of trainable tokens."""
    runs, current = [], []
    for token, flag in zip(tokenized.input_ids, tokenized.trainable, strict=True):
        if flag:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_unmasked_tokens_are_exactly_the_assistant_replies(tokenizer):
    tokenized = tokenize_conversation(tokenizer, MULTI_TURN)
    assert trained_runs(tokenizer, tokenized) == ["4." + END, "2+2 = 4\n4 x 3 = 12" + END]


def test_masked_tokens_hold_every_system_and_user_turn(tokenizer):
    tokenized = tokenize_conversation(tokenizer, MULTI_TURN)
    masked = tokenizer.decode(
        [t for t, f in zip(tokenized.input_ids, tokenized.trainable, strict=True) if not f]
    )
    for message in MULTI_TURN[:2] + MULTI_TURN[3:4]:
        assert message["content"] in masked
    assert "<|im_start|>assistant\n" in masked  # the generation prompt is input, not target


def test_tokens_are_the_template_rendering(tokenizer):
    # Tokenising span by span must give the same ids as the whole rendered text here,
    # i.e. what vLLM sees when it is prompted with the same template.
    tokenized = tokenize_conversation(tokenizer, MULTI_TURN)
    text = tokenizer.apply_chat_template(MULTI_TURN, tokenize=False)
    assert tokenized.input_ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(t for t, _ in reply_spans(tokenizer, MULTI_TURN)) == text


def test_backward_recipe_trains_on_the_instruction(tokenizer):
    pair = {
        "instruction": "Write a haiku about rain.",
        "response": "Soft rain on the roof.",
        "source": "seed",
    }
    tokenized = tokenize_conversation(tokenizer, conversation_for(pair, "backward"))
    assert trained_runs(tokenizer, tokenized) == ["Write a haiku about rain." + END]


def test_curated_source_tag_is_masked_input(tokenizer):
    pair = {"instruction": "Q?", "response": "A.", "source": "augmented"}
    tokenized = tokenize_conversation(tokenizer, conversation_for(pair, "curated"))
    assert trained_runs(tokenizer, tokenized) == ["A." + END]
    assert "Answer with knowledge from web search." in tokenizer.decode(tokenized.input_ids)


def test_truncation_keeps_masks_aligned(tokenizer):
    full = tokenize_conversation(tokenizer, MULTI_TURN)
    short = tokenize_conversation(tokenizer, MULTI_TURN, max_seq_len=len(full) - 3)
    assert short.input_ids == full.input_ids[:-3]
    assert short.trainable == full.trainable[:-3]


class _UnstableTemplate:
    """A template that rewrites earlier turns once later ones exist (e.g. drops reasoning)."""

    eos_token_id = 0

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        last = len(messages) - 1
        text = "".join(
            f"[{m['role']}]{m['content'] if i == last or m['role'] != 'assistant' else '...'}"
            for i, m in enumerate(messages)
        )
        return text + ("[assistant]" if add_generation_prompt else "")


def test_a_template_that_is_not_prefix_stable_is_refused():
    with pytest.raises(ConversationError, match="prefix-stable"):
        reply_spans(_UnstableTemplate(), MULTI_TURN)
