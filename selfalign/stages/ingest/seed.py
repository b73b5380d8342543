"""Human seed pairs from the usual formats into one schema (``schema.SEED_SCHEMA``).

Formats, detected per record when ``format=auto``:

* ``oasst1``: OpenAssistant messages, flat (one message per row with ``message_tree_id`` and
  ``parent_id``, as in the published Parquet/JSONL) or as trees (``prompt`` with nested
  ``replies``, the published ``*.trees.jsonl``). The paper's selection: the first turn of each
  tree, an English root prompt, the assistant reply of rank 0, instruction and response with
  more than 5 words each, then the top N (3,200) by the reply's ``quality`` label;
* ``alpaca``: ``instruction``, optional ``input``, ``output``;
* ``sharegpt``: ``conversations`` of ``{"from", "value"}``;
* ``messages``: chat ``messages`` of ``{"role", "content"}``;
* ``pairs``: ``instruction`` (or ``prompt``) and ``response`` (or ``output``/``completion``).

Multi-turn inputs give their first user turn and the assistant reply to it as the pair and
keep the whole conversation in ``messages``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from selfalign.stages.ingest.config import OasstSelection, SeedIngestConfig
from selfalign.stages.ingest.schema import MESSAGE_TYPE, stable_id

SEED_STAGING_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # pair | drop | reject | message (an oasst1 message to group)
        ("id", pa.string()),
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("source", pa.string()),
        ("messages", pa.list_(MESSAGE_TYPE)),
        ("quality", pa.float64()),  # oasst1 reply quality, ranked for top-N; null otherwise
        ("ranked", pa.bool_()),  # takes part in the oasst1 top-N
        ("file", pa.string()),
        ("locator", pa.string()),
        ("stage", pa.string()),
        ("filter", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        # flattened oasst1 message (kind == "message")
        ("tree_id", pa.string()),
        ("message_id", pa.string()),
        ("parent_id", pa.string()),
        ("role", pa.string()),
        ("lang", pa.string()),
        ("rank", pa.int64()),
        ("text", pa.string()),
        ("usable", pa.bool_()),  # not deleted and not failed review (per the selection config)
    ]
)

_USER_ROLES = {"user", "human", "prompter"}
_ASSISTANT_ROLES = {"assistant", "gpt", "chatgpt", "bard", "bing", "model"}


@dataclass(frozen=True)
class Pair:
    instruction: str
    response: str
    messages: list[dict[str, str]] | None = None
    quality: float | None = None


def word_count(text: str) -> int:
    return len(text.split())


def detect_format(record: dict[str, Any]) -> str | None:
    """
    >>> detect_format({"instruction": "a", "input": "", "output": "b"})
    'alpaca'
    >>> detect_format({"conversations": [{"from": "human", "value": "hi"}]})
    'sharegpt'
    """
    if "message_tree_id" in record and "parent_id" in record:
        return "oasst1"
    if isinstance(record.get("prompt"), dict) and "replies" in record["prompt"]:
        return "oasst1"
    if isinstance(record.get("conversations"), list):
        return "sharegpt"
    if isinstance(record.get("messages"), list):
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if ("instruction" in record or "prompt" in record) and (
        "response" in record or "completion" in record
    ):
        return "pairs"
    return None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def from_alpaca(record: dict[str, Any]) -> Pair | str:
    instruction, extra, output = (
        _text(record.get("instruction")),
        _text(record.get("input")),
        _text(record.get("output")),
    )
    if not instruction or not output:
        return "missing_field"
    return Pair(f"{instruction}\n\n{extra}" if extra else instruction, output)


def from_pairs(record: dict[str, Any]) -> Pair | str:
    instruction = _text(record.get("instruction")) or _text(record.get("prompt"))
    response = (
        _text(record.get("response"))
        or _text(record.get("output"))
        or _text(record.get("completion"))
    )
    if not instruction or not response:
        return "missing_field"
    messages = record.get("messages")
    if isinstance(messages, list):
        return _from_turns(messages, "role", "content", keep_pair=Pair(instruction, response))
    return Pair(instruction, response)


def _from_turns(
    turns: list[Any], role_key: str, text_key: str, keep_pair: Pair | None = None
) -> Pair | str:
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            return "bad_conversation"
        role = str(turn.get(role_key) or "").strip().lower()
        content = turn.get(text_key)
        if not isinstance(content, str):
            return "bad_conversation"
        if role in _USER_ROLES:
            role = "user"
        elif role in _ASSISTANT_ROLES:
            role = "assistant"
        elif role != "system":
            return "bad_conversation"
        messages.append({"role": role, "content": content})
    if keep_pair:
        return Pair(keep_pair.instruction, keep_pair.response, messages)
    for i, message in enumerate(messages[:-1]):
        if message["role"] == "user":
            reply = messages[i + 1]
            if (
                reply["role"] == "assistant"
                and message["content"].strip()
                and reply["content"].strip()
            ):
                # Only multi-turn conversations keep their messages: a single exchange is the pair.
                keep = messages if len(messages) > 2 or messages[0]["role"] == "system" else None
                return Pair(message["content"].strip(), reply["content"].strip(), keep)
            break
    return "bad_conversation"


def from_sharegpt(record: dict[str, Any]) -> Pair | str:
    return _from_turns(record.get("conversations") or [], "from", "value")


def from_messages(record: dict[str, Any]) -> Pair | str:
    return _from_turns(record.get("messages") or [], "role", "content")


def oasst_quality(labels: Any, name: str) -> float | None:
    """The value of one label, from either published layout.

    >>> oasst_quality({"name": ["spam", "quality"], "value": [0.0, 0.75], "count": [3, 3]}, "quality")
    0.75
    >>> oasst_quality({"quality": {"value": 0.5, "count": 2}}, "quality")
    0.5
    """
    if not isinstance(labels, dict):
        return None
    if isinstance(labels.get("name"), list):  # flat Parquet: parallel lists
        for label, value in zip(labels.get("name") or [], labels.get("value") or [], strict=False):
            if label == name and value is not None:
                return float(value)
        return None
    entry = labels.get(name)  # trees JSONL: {name: {"value", "count"}}
    if isinstance(entry, dict) and entry.get("value") is not None:
        return float(entry["value"])
    if isinstance(entry, int | float):
        return float(entry)
    return None


def oasst_usable(message: dict[str, Any], selection: OasstSelection) -> bool:
    if selection.skip_deleted and message.get("deleted") is True:
        return False
    return not (selection.skip_failed_review and message.get("review_result") is False)


def oasst_message(record: dict[str, Any], selection: OasstSelection) -> dict[str, Any] | str:
    """A flat oasst1 message reduced to what the selection needs (grouped by tree later)."""
    text = record.get("text")
    if not isinstance(text, str) or not record.get("message_id"):
        return "missing_field"
    rank = record.get("rank")
    return {
        "tree_id": str(record.get("message_tree_id")),
        "message_id": str(record["message_id"]),
        "parent_id": str(record["parent_id"]) if record.get("parent_id") else None,
        "role": str(record.get("role") or ""),
        "lang": str(record.get("lang") or ""),
        "rank": int(rank) if isinstance(rank, int | float) else None,
        "text": text,
        "quality": oasst_quality(record.get("labels"), selection.quality_label),
        "usable": oasst_usable(record, selection),
    }


def select_oasst(
    root: dict[str, Any] | None, replies: list[dict[str, Any]], selection: OasstSelection
) -> Pair | tuple[str, str]:
    """The paper's pair from one tree: ``Pair`` or ``(drop_reason, detail)``."""
    if root is None:
        return "no_root_prompt", ""
    if not root.get("usable", True):
        return "unusable_prompt", "deleted or failed review"
    if root.get("lang") != selection.lang:
        return "not_english" if selection.lang == "en" else "other_language", str(root.get("lang"))
    best = [
        r
        for r in replies
        if r.get("role") == "assistant" and r.get("rank") == 0 and r.get("usable", True)
    ]
    if not best:
        return "no_rank0_reply", ""
    reply = best[0]
    instruction, response = root["text"].strip(), reply["text"].strip()
    if (
        word_count(instruction) <= selection.min_words
        or word_count(response) <= selection.min_words
    ):
        return "too_short", f"{word_count(instruction)}/{word_count(response)} words"
    return Pair(instruction, response, None, reply.get("quality"))


def oasst_tree(record: dict[str, Any], selection: OasstSelection) -> Pair | tuple[str, str]:
    """The published trees layout: ``{"prompt": {..., "replies": [...]}}``."""
    prompt = record["prompt"]
    root = {
        "text": prompt.get("text") or "",
        "lang": prompt.get("lang"),
        "usable": oasst_usable(prompt, selection),
    }
    replies = []
    for reply in prompt.get("replies") or []:
        if isinstance(reply, dict) and isinstance(reply.get("text"), str):
            replies.append(
                {
                    "role": reply.get("role"),
                    "rank": reply.get("rank"),
                    "text": reply["text"],
                    "quality": oasst_quality(reply.get("labels"), selection.quality_label),
                    "usable": oasst_usable(reply, selection),
                }
            )
    return select_oasst(root, replies, selection)


CONVERTERS = {
    "alpaca": from_alpaca,
    "sharegpt": from_sharegpt,
    "messages": from_messages,
    "pairs": from_pairs,
}


def pair_row(pair: Pair, source: str, ranked: bool) -> dict[str, Any]:
    return {
        "kind": "pair",
        "id": stable_id(source, pair.instruction, pair.response),
        "instruction": pair.instruction,
        "response": pair.response,
        "source": source,
        "messages": pair.messages,
        "quality": pair.quality,
        "ranked": ranked,
        "stage": "convert",
        "filter": "",
        "reason": "",
    }


def drop_row(reason: str, detail: str, source: str, file: str, locator: str) -> dict[str, Any]:
    return {
        "kind": "drop",
        "source": source,
        "file": file,
        "locator": locator,
        "stage": "select",
        "filter": "selection",
        "reason": reason,
        "detail": detail,
    }


def record_row(
    record: dict[str, Any], file: str, locator: str, config: SeedIngestConfig
) -> dict[str, Any]:
    """One staging row for one input record."""
    fmt = config.format if config.format != "auto" else detect_format(record)
    if fmt is None:
        keys = ", ".join(sorted(record)[:8])
        return {
            "kind": "reject", "file": file, "locator": locator, "stage": "convert",
            "filter": "", "reason": "missing_field", "detail": f"unknown seed format; keys: {keys}",
        }  # fmt: skip
    source = config.source or fmt
    if fmt == "oasst1":
        if isinstance(record.get("prompt"), dict):
            result = oasst_tree(record, config.oasst)
            if isinstance(result, Pair):
                row = pair_row(result, source, ranked=True)
                row.update(file=file, locator=locator)
                return row
            return drop_row(result[0], result[1], source, file, locator)
        message = oasst_message(record, config.oasst)
        if isinstance(message, str):
            return {
                "kind": "reject", "file": file, "locator": locator, "stage": "convert",
                "filter": "", "reason": message, "detail": "oasst1 message without text/id",
            }  # fmt: skip
        message.update(
            kind="message",
            source=source,
            file=file,
            locator=locator,
            stage="convert",
            filter="",
            reason="",
        )
        return message
    result = CONVERTERS[fmt](record)
    if isinstance(result, str):
        return {
            "kind": "reject", "file": file, "locator": locator, "stage": "convert",
            "filter": "", "reason": result, "detail": f"{fmt} record",
        }  # fmt: skip
    if (
        word_count(result.instruction) <= config.min_words
        or word_count(result.response) <= config.min_words
    ):
        return drop_row("too_short", "", source, file, locator)
    row = pair_row(result, source, ranked=False)
    row.update(file=file, locator=locator)
    return row


def tree_rows(messages: list[dict[str, Any]], config: SeedIngestConfig) -> dict[str, Any]:
    """One staging row (pair or drop) for one oasst1 tree given as flat messages."""
    roots = [m for m in messages if not m.get("parent_id")]
    root = roots[0] if roots else None
    replies = [m for m in messages if root and m.get("parent_id") == root["message_id"]]
    source = messages[0].get("source") or "oasst1"
    result = select_oasst(root, replies, config.oasst)
    file, locator = messages[0].get("file") or "", f"tree {messages[0].get('tree_id')}"
    if isinstance(result, Pair):
        row = pair_row(result, source, ranked=True)
        row.update(file=file, locator=locator)
        return row
    return drop_row(result[0], result[1], source, file, locator)


def seed_ledger(counts: list[dict[str, Any]], pairs_out: int) -> dict:
    """Stats of a seed run from grouped ``{"kind", "stage", "reason", "count"}`` rows.

    Units: a *record* is a JSON line, JSON array item or Parquet row; flat oasst1 records are
    *messages*, grouped into *trees* (rows with stage ``tree``); a *candidate* is a record that
    converted (pair or selection drop) or a tree. Exact by construction:
    ``records_in = rejects + messages + candidates - trees`` and
    ``candidates = pairs_out + dropped`` (``below_top_n`` is what the top-N cut removed).
    """
    rejects: dict[str, int] = {}
    dropped: dict[str, int] = {}
    messages = candidates = trees = 0
    for row in counts:
        count = int(row["count"])
        if row["kind"] == "reject":
            rejects[row["reason"]] = rejects.get(row["reason"], 0) + count
        elif row["kind"] == "message":
            messages += count
        elif row["kind"] in ("pair", "drop"):
            candidates += count
            trees += count if row.get("stage") == "tree" else 0
            if row["kind"] == "drop":
                dropped[row["reason"]] = dropped.get(row["reason"], 0) + count
    pairs_before_top_n = candidates - sum(dropped.values())
    if pairs_before_top_n > pairs_out:
        dropped["below_top_n"] = pairs_before_top_n - pairs_out
    rejects_total = sum(rejects.values())
    records_in = rejects_total + messages + candidates - trees
    return {
        "records_in": records_in,
        "oasst_messages": messages,
        "oasst_trees": trees,
        "candidates": candidates,
        "pairs_out": pairs_out,
        "rejects": {"total": rejects_total, "by_reason": dict(sorted(rejects.items()))},
        "dropped": {"total": sum(dropped.values()), "by_reason": dict(sorted(dropped.items()))},
        "balance": {"ok": candidates == pairs_out + sum(dropped.values())},
    }
