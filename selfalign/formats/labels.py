"""Token ids and loss masks for one conversation, built message by message.

Only assistant replies carry loss (every assistant turn of a multi-turn conversation;
system and user turns are masked). The model's own chat template decides the text, so
the boundaries come from rendering it: the conversation up to each reply with the
generation prompt, and up to the end of that reply. Each span between two boundaries
is tokenised on its own and the pieces are concatenated, so a label can never drift
from its text the way offset arithmetic on one long tokenisation can.

Inside a reply span, tokens after the last end-of-turn token (the template's trailing
newline) are masked: the model must learn to stop, not to print template whitespace.

``transformers`` is imported by the caller (a tokenizer is passed in); this module
itself imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfalign.formats.conversations import ConversationError, Message


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    trainable: list[bool]  # True where the token is part of an assistant reply

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def num_trainable(self) -> int:
        return sum(self.trainable)


def render(tokenizer: Any, messages: Sequence[Message], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=generation_prompt
    )


def reply_spans(tokenizer: Any, messages: Sequence[Message]) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, is_reply)`` spans, in order.

    Raises ``ConversationError`` when the template is not prefix-stable (rendering a
    longer conversation changes the text of an earlier turn): labels would be wrong.
    """
    full = render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[str, bool]] = []
    position = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:index], generation_prompt=True)
        through_reply = render(tokenizer, messages[: index + 1], generation_prompt=False)
        if not (
            full.startswith(prompt)
            and full.startswith(through_reply)
            and position <= len(prompt) <= len(through_reply)
        ):
            raise ConversationError(
                "the chat template is not prefix-stable (an earlier turn renders differently "
                "once later turns are added); per-message labels cannot be built for it"
            )
        spans.append((full[position : len(prompt)], False))
        spans.append((full[len(prompt) : len(through_reply)], True))
        position = len(through_reply)
    spans.append((full[position:], False))
    return [(text, is_reply) for text, is_reply in spans if text]


def tokenize_conversation(
    tokenizer: Any,
    messages: Sequence[Message],
    *,
    max_seq_len: int | None = None,
    end_of_turn_id: int | None = None,
) -> TokenizedConversation:
    """Token ids + per-token trainable flags for ``messages`` (truncated to ``max_seq_len``).

    ``end_of_turn_id`` defaults to the tokenizer's EOS token (``<|im_end|>`` for ChatML
    models such as SmolLM2).
    """
    if end_of_turn_id is None:
        end_of_turn_id = tokenizer.eos_token_id
    input_ids: list[int] = []
    trainable: list[bool] = []
    for text, is_reply in reply_spans(tokenizer, messages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        flags = [is_reply] * len(ids)
        if is_reply and end_of_turn_id in ids:
            last_end = len(ids) - 1 - ids[::-1].index(end_of_turn_id)
            flags = [i <= last_end for i in range(len(ids))]
        input_ids.extend(ids)
        trainable.extend(flags)
    if max_seq_len is not None:
        input_ids, trainable = input_ids[:max_seq_len], trainable[:max_seq_len]
    return TokenizedConversation(input_ids, trainable)
