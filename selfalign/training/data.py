"""Training rows -> token ids + targets, on the driver, once per run."""

from __future__ import annotations

import json
import logging

from selfalign.core.errors import ConfigError
from selfalign.formats.conversations import ConversationError, conversation_for
from selfalign.training.config import TrainConfig
from selfalign.training.packing import TokenizedDataset

log = logging.getLogger(__name__)


def read_all_rows(uri: str, *, limit: int | None = None) -> list[dict]:
    """Every row of a JSONL/Parquet input (file, directory or glob, any filesystem).

    The training set is tokenised in full on the driver, so the rows are read directly
    rather than through a Ray Dataset; JSON lines are parsed with ``json`` so nested
    ``messages`` keep their exact shape.
    """
    import pyarrow.parquet as pq

    from selfalign.core.io import expand_input

    filesystem, files, fmt = expand_input(uri)
    rows: list[dict] = []
    for path in files:
        if fmt == "parquet":
            rows.extend(pq.read_table(path, filesystem=filesystem).to_pylist())
        else:
            with filesystem.open_input_stream(path, compression="detect") as stream:
                rows.extend(
                    json.loads(line) for line in stream.read().decode().splitlines() if line.strip()
                )
        if limit is not None and len(rows) >= limit:
            return rows[:limit]
    return rows


def tokenize_rows(
    rows: list[dict], config: TrainConfig, tokenizer
) -> tuple[TokenizedDataset, dict]:
    """Token ids + targets for every usable row; counts of what was dropped and why."""
    from selfalign.formats.labels import tokenize_conversation

    examples, dropped_invalid, dropped_no_target, truncated = [], 0, 0, 0
    for row in rows:
        try:
            messages = conversation_for(row, config.chat_format, source_tags=config.source_tags)
            full = tokenize_conversation(tokenizer, messages)
        except ConversationError as err:
            dropped_invalid += 1
            if dropped_invalid <= 3:
                log.warning("skipping row: %s", err)
            continue
        if len(full) > config.max_seq_len:
            truncated += 1
        ids, flags = full.input_ids[: config.max_seq_len], full.trainable[: config.max_seq_len]
        # The first token can never be a target (nothing precedes it).
        if not any(flags[1:]):
            dropped_no_target += 1
            continue
        examples.append((ids, flags))
    if not examples:
        raise ConfigError(
            "no usable training rows (all invalid or without an assistant reply within max_seq_len)"
        )
    stats = {
        "rows": len(rows),
        "examples": len(examples),
        "dropped_invalid": dropped_invalid,
        "dropped_no_target": dropped_no_target,
        "truncated": truncated,
    }
    return TokenizedDataset.from_examples(examples), stats
