"""Self-augmentation rows: the backward model writes one instruction per web segment (pure).

``request_row`` builds the engine row for a segment; ``clean_instruction`` turns the
model's raw text into an instruction or a reject reason. No ray/vllm/torch imports.
"""

from __future__ import annotations

import re
from typing import Any

from selfalign.formats.conversations import prompt_messages

MIN_WORDS = 3
MAX_WORDS = 200

# Role markers and labels a model may echo around the instruction.
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]")
_LEADING_LABEL = re.compile(
    r"^\s*(?:(?:the\s+)?(?:user'?s?\s+)?(?:instruction|question|request|prompt|query|task)"
    r"|user|human|###\s*instruction)\s*[:：-]\s*",
    re.IGNORECASE,
)
# Where a model that keeps going starts the next turn: cut there.
_NEXT_TURN = re.compile(
    r"\n\s*(?:assistant|answer|response|ai|system|###\s*response|text)\s*[:：]",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’`"


def request_row(segment: dict[str, Any]) -> dict[str, Any]:
    """Engine row (``messages``) for one segment row (``id``, ``text``): the backward
    chat format's prompt, i.e. exactly the conversation the backward model was trained on."""
    return {
        "messages": prompt_messages(
            {"id": segment.get("id"), "response": segment["text"]}, "backward"
        )
    }


def clean_instruction(raw: str | None, segment: str | None = None) -> tuple[str | None, str | None]:
    """Raw model output -> ``(instruction, None)`` or ``(None, reason)``. Never raises."""
    if raw is None:
        return None, "no output"
    text = _SPECIAL.sub("", str(raw))
    cut = _NEXT_TURN.search(text)
    if cut:
        text = text[: cut.start()]
    text = text.strip()
    # Strip a leading label once or twice ("Instruction: Question: ...").
    for _ in range(2):
        text = _LEADING_LABEL.sub("", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if not text:
        return None, "empty"
    words = text.split()
    if len(words) < MIN_WORDS:
        return None, "too short"
    if len(words) > MAX_WORDS:
        return None, "too long"
    if _is_repetitive(words):
        return None, "repetitive"
    if segment and _copies_segment(text, segment):
        return None, "copies the segment"
    return text, None


def _is_repetitive(words: list[str]) -> bool:
    # Degenerate loops ("the the the ...", a phrase repeated): few distinct trigrams.
    if len(words) < 12:
        return len(set(w.lower() for w in words)) <= max(1, len(words) // 4)
    trigrams = [tuple(w.lower() for w in words[i : i + 3]) for i in range(len(words) - 2)]
    return len(set(trigrams)) < 0.4 * len(trigrams)


def _copies_segment(text: str, segment: str) -> bool:
    # An "instruction" that is just the segment's opening sentence(s) pasted back.
    norm = " ".join(text.lower().split())
    return len(norm) >= 40 and norm in " ".join(segment.lower().split())


# Engine result columns that are replaced by the stage's own columns.
_ENGINE_COLUMNS = ("messages", "prompt", "generated_text", "num_input_tokens", "error")


def finish_row(row: dict[str, Any]) -> dict[str, Any]:
    """Engine output row -> candidate pair row (``instruction`` or a ``reject_reason``).

    The segment's text becomes the pair's ``response``; the segment's own ``source``
    (its file or URL) moves to ``origin``, and ``source`` becomes the pair's tag.
    """
    out = {k: v for k, v in row.items() if k not in (*_ENGINE_COLUMNS, "text", "source")}
    segment = row.get("text")
    out.update(response=segment, source="augmented", origin=row.get("source"))
    out["raw_instruction"] = row.get("generated_text")
    error = row.get("error")
    if error:
        invalid = str(error).startswith("invalid row")
        out.update(instruction=None, reject_reason="invalid input" if invalid else "engine error")
        out["reject_detail"] = str(error)
        return out
    instruction, reason = clean_instruction(row.get("generated_text"), segment)
    out.update(instruction=instruction, reject_reason=reason, reject_detail=None)
    return out


def safe_request_row(segment: dict[str, Any]) -> dict[str, Any]:
    """``request_row`` that never raises: a bad segment gets empty messages, which the
    engine records as an invalid row (and ``finish_row`` as ``invalid input``)."""
    try:
        return {**segment, **request_row(segment)}
    except Exception:  # noqa: BLE001 - any bad segment becomes a recorded reject
        return {**segment, "messages": []}
