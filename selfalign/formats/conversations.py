"""Chat formats: what a model is trained on, and prompted with, for one data row.

A *chat format* is the conversation shape a model learns: the Humback loop has three
(``backward``, ``seed``, ``curated``), and a model is always prompted, scored and
evaluated in the format it was trained in.

This is the single source of the *source tags*: the paper trains M_t on seed pairs and
curated (backtranslated) pairs with a system prompt that says where a pair came from,
and scoring must render exactly the same conversation. The public reimplementation
swapped the two prompts in every published result; keeping the mapping here, once, and
pinning it in tests is how this project avoids that.

Formats (rows: ``id``, ``instruction``, ``response``, ``source`` and optional
``messages``):

* ``backward`` (M_yx): user turn = the response inside the backtranslation template
  (``selfalign/formats/prompts/backtranslate.txt``), assistant target = the instruction, i.e.
  learn p(instruction | response); no system prompt of our own. Training and
  self-augmentation both build that turn with ``backward_user_turn``, so the backward
  model is prompted exactly as it was trained (and a base instruct model can
  backtranslate zero-shot with the same prompt).
* ``seed`` (M0): user = instruction, assistant = response; no source tag (one source).
* ``curated`` (M_t, t >= 1): seed + curated pairs, each with its source tag as the
  system prompt.

Pure: no ray/torch/transformers imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from selfalign.formats.prompts import render

ChatFormat = Literal["backward", "seed", "curated"]
CHAT_FORMATS: tuple[ChatFormat, ...] = ("backward", "seed", "curated")
# The formats a scoring model can have been trained in (a backward model does not score).
ScorerFormat = Literal["seed", "curated"]
Source = Literal["seed", "augmented"]

# The paper's two tags, in this project's words. Seed pairs were written by people as
# an assistant would answer; augmented pairs take their answer from web text.
SOURCE_TAG_PROMPTS: dict[str, str] = {
    "seed": "Answer in the style of an AI Assistant.",
    "augmented": "Answer with knowledge from web search.",
}

Message = dict[str, str]


class ConversationError(ValueError):
    """A data row that cannot become a training conversation."""


def source_tag_prompt(source: str) -> str:
    """The system prompt for a pair's source (``seed`` or ``augmented``)."""
    try:
        return SOURCE_TAG_PROMPTS[source]
    except KeyError:
        raise ConversationError(
            f"unknown source {source!r}; expected one of {sorted(SOURCE_TAG_PROMPTS)}"
        ) from None


def backward_user_turn(response: str) -> str:
    """The backward model's user turn for a response (a web segment at inference)."""
    return render("backtranslate", response=response)


def conversation_for(
    pair: Mapping[str, Any], chat_format: ChatFormat, *, source_tags: bool = True
) -> list[Message]:
    """The messages the model is trained on for this row (the last one is a reply).

    ``source_tags`` only matters for ``curated``: set it to False to train the
    paper's "no tags" ablation.

    >>> conversation_for({"instruction": "Hi?", "response": "Hello."}, "seed")
    [{'role': 'user', 'content': 'Hi?'}, {'role': 'assistant', 'content': 'Hello.'}]
    """
    if chat_format not in CHAT_FORMATS:
        raise ConversationError(
            f"unknown chat format {chat_format!r}; expected one of {CHAT_FORMATS}"
        )
    if chat_format == "backward":
        instruction, response = _first_exchange(pair)
        return [
            {"role": "user", "content": backward_user_turn(response)},
            {"role": "assistant", "content": instruction},
        ]
    messages = _messages(pair)
    if chat_format == "curated" and source_tags:
        messages = _with_system(messages, source_tag_prompt(_source(pair)))
    return messages


def prompt_messages(
    pair: Mapping[str, Any], chat_format: ChatFormat, *, source_tags: bool = True
) -> list[Message]:
    """What a model trained in ``chat_format`` is prompted with: its training conversation
    without the final reply. Needs no reply: ``backward`` takes ``response`` alone (a web
    segment to backtranslate), ``seed``/``curated`` take ``instruction`` (or ``messages``
    ending in a user turn)."""
    if chat_format not in CHAT_FORMATS:
        raise ConversationError(
            f"unknown chat format {chat_format!r}; expected one of {CHAT_FORMATS}"
        )
    if chat_format == "backward":
        response = pair.get("response")
        if not isinstance(response, str) or not response.strip():
            raise ConversationError(
                f"row {pair.get('id')!r}: backward prompt needs a non-empty 'response'"
            )
        return [{"role": "user", "content": backward_user_turn(response)}]
    raw = pair.get("messages")
    if raw is not None and len(raw) > 0:
        messages = [_checked_message(m, pair) for m in raw]
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
    else:
        instruction = pair.get("instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConversationError(f"row {pair.get('id')!r}: empty or missing 'instruction'")
        messages = [{"role": "user", "content": instruction}]
    if not messages or messages[-1]["role"] != "user":
        raise ConversationError(f"row {pair.get('id')!r}: the prompt must end with a user message")
    if chat_format == "curated" and source_tags:
        messages = _with_system(messages, source_tag_prompt(_source(pair)))
    return messages


def _source(pair: Mapping[str, Any]) -> str:
    source = pair.get("source")
    if source is None:
        raise ConversationError(f"row {pair.get('id')!r} has no 'source' (seed or augmented)")
    return str(source)


def _messages(pair: Mapping[str, Any]) -> list[Message]:
    raw = pair.get("messages")
    if raw is not None and len(raw) > 0:
        messages = [_checked_message(m, pair) for m in raw]
        if messages[-1]["role"] != "assistant":
            raise ConversationError(
                f"row {pair.get('id')!r}: the last message must be the assistant's"
            )
        if not any(m["role"] == "user" for m in messages):
            raise ConversationError(f"row {pair.get('id')!r}: no user message")
        return messages
    instruction, response = _first_exchange(pair)
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]


def _first_exchange(pair: Mapping[str, Any]) -> tuple[str, str]:
    """(instruction, response) from the columns, else from the first user/assistant turns."""
    instruction, response = pair.get("instruction"), pair.get("response")
    if not (instruction and response) and pair.get("messages") is not None:
        messages = [_checked_message(m, pair) for m in pair["messages"]]
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if users and users[0] + 1 < len(messages) and messages[users[0] + 1]["role"] == "assistant":
            instruction = messages[users[0]]["content"]
            response = messages[users[0] + 1]["content"]
    for name, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str) or not value.strip():
            raise ConversationError(f"row {pair.get('id')!r}: empty or missing {name!r}")
    return instruction, response


def _checked_message(message: Any, pair: Mapping[str, Any]) -> Message:
    if not isinstance(message, Mapping) or not {"role", "content"} <= set(message):
        raise ConversationError(f"row {pair.get('id')!r}: a message needs 'role' and 'content'")
    role, content = message["role"], message["content"]
    if role not in ("system", "user", "assistant"):
        raise ConversationError(f"row {pair.get('id')!r}: unknown role {role!r}")
    if not isinstance(content, str):
        raise ConversationError(f"row {pair.get('id')!r}: message content must be a string")
    return {"role": role, "content": content}


def _with_system(messages: list[Message], tag: str) -> list[Message]:
    # A conversation that already has a system prompt keeps it, after the tag: the tag
    # must be present in every tagged example for the model to learn what it means.
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{tag}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": tag}, *messages]
