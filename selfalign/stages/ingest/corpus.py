"""One input source -> staging rows: read, segment, filter, and dedup keys per segment.

The staging dataset holds one row per *ledger entry*, tagged by ``kind``:

* ``reject``: a unit of input (file, JSON line, Parquet row, WARC record) that could not be
  read (stage ``read``) or that yielded no segment (stage ``segment``);
* ``doc``: a document that yielded ``n_segments`` >= 1 segments;
* ``drop``: a segment removed by a filter (``filter``, ``reason``);
* ``segment``: a segment that passed every filter, with its exact and LSH band keys.

Units and the ledger (:func:`ledger`), exact by construction:

* ``documents_in = documents_segmented + rejects`` (each unit read ends as one or the other);
* ``segments = segments_out + filter drops + duplicates`` (each segment ends in one place);
* together: ``documents_in + (segments - documents_segmented) = segments_out + rejects + drops``,
  where ``segments - documents_segmented`` is what segmentation added (a document cut into k
  segments counts once as a document and k times as a segment).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from selfalign.stages.ingest import dedup, filters, readers
from selfalign.stages.ingest.config import CorpusIngestConfig
from selfalign.stages.ingest.schema import stable_id
from selfalign.stages.ingest.segment import segment_document

STAGING_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),  # reject | doc | drop | segment
        ("uid", pa.string()),  # unique row key of a segment: (doc_id, position)
        ("id", pa.string()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("locator", pa.string()),
        ("position", pa.int32()),
        ("header", pa.string()),
        ("text", pa.string()),
        ("n_chars", pa.int64()),
        ("lang", pa.string()),
        ("lang_score", pa.float32()),
        ("stage", pa.string()),
        ("filter", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("n_segments", pa.int64()),
        ("text_key", pa.int64()),
        ("band_keys", pa.list_(pa.int64())),
    ]
)
STAGING_BATCH_ROWS = 256

ReadFn = Callable[[], Iterator[readers.Item]]


def _reject(source: str, locator: str, stage: str, reason: str, detail: str) -> dict[str, Any]:
    return {
        "kind": "reject",
        "doc_id": stable_id(source, locator),
        "source": source,
        "locator": locator,
        "stage": stage,
        "filter": "",
        "reason": reason,
        "detail": detail[:500],
    }


def document_rows(
    file_source: str,
    locator: str,
    text: str,
    kind: str,
    source: str,
    config: CorpusIngestConfig,
) -> Iterator[dict[str, Any]]:
    """Ledger rows of one document: a reject, or a ``doc`` row plus one row per segment."""
    doc_id = stable_id(file_source, locator)
    sections, reason = segment_document(text, kind, config.segment)
    if not sections:
        row = _reject(
            file_source, locator, "segment", reason, source if source != file_source else ""
        )
        row["doc_id"] = doc_id
        yield row
        return
    yield {
        "kind": "doc",
        "stage": "segment",
        "doc_id": doc_id,
        "source": source,
        "locator": locator,
        "filter": "",
        "reason": "",
        "n_segments": len(sections),
    }
    want_keys = config.dedup.exact or config.dedup.near
    for position, section in enumerate(sections):
        seg_text = section.text
        row = {
            "uid": stable_id(doc_id, str(position)),
            "id": stable_id(source, seg_text),
            "doc_id": doc_id,
            "source": source,
            "locator": locator,
            "position": position,
            "header": section.header,
            "n_chars": len(seg_text),
            "stage": "filter",
        }
        verdict = filters.check_segment(seg_text, section.header, config.filters)
        row["lang"], row["lang_score"] = verdict.lang, verdict.lang_score
        if not verdict.passed:
            row.update(
                kind="drop", filter=verdict.filter, reason=verdict.reason, detail=verdict.detail
            )
            yield row
            continue
        row.update(kind="segment", text=seg_text, filter="", reason="")
        if want_keys:
            row["text_key"] = dedup.exact_key(seg_text)
            if config.dedup.near:
                row["band_keys"] = dedup.band_keys(
                    dedup.minhash(seg_text, config.dedup), config.dedup
                )
        yield row


def source_rows(
    items: Iterator[readers.Item], file_source: str, config: CorpusIngestConfig
) -> Iterator[dict[str, Any]]:
    """Ledger rows of every record a reader yields for one file (or embedded package)."""
    limit = config.read.max_document_bytes
    for item in items:
        if isinstance(item, readers.Reject):
            yield _reject(file_source, item.locator, "read", item.reason, item.detail)
            continue
        if item.kind == "row":
            row = item.value
            text = row.get(config.text_column) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                detail = f"no non-empty string in column {config.text_column!r}"
                yield _reject(file_source, item.locator, "read", "missing_field", detail)
                continue
            if len(text) > limit:
                yield _reject(
                    file_source, item.locator, "read", "too_large", f"{len(text)} characters"
                )
                continue
            url = row.get(config.url_column) if config.url_column else None
            source = url if isinstance(url, str) and url else file_source
            yield from document_rows(file_source, item.locator, text, "text", source, config)
        else:
            source = item.source or file_source
            yield from document_rows(
                file_source, item.locator, item.value, item.kind, source, config
            )


def batched_tables(
    rows: Iterator[dict[str, Any]], size: int = STAGING_BATCH_ROWS
) -> Iterator[pa.Table]:
    """Ledger rows as Arrow tables of the staging schema (fixed types, also for all-null columns)."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield pa.Table.from_pylist(batch, schema=STAGING_SCHEMA)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=STAGING_SCHEMA)


def ledger(counts: list[dict[str, Any]], segments_out: int, duplicates: dict[str, int]) -> dict:
    """The stats JSON from grouped staging counts.

    ``counts`` rows: ``{"kind", "stage", "filter", "reason", "count", "n_segments"}`` where
    ``n_segments`` sums the column of that group (only ``doc`` rows carry it).
    """
    rejects: dict[str, int] = {}
    rejects_by_stage: dict[str, int] = {}
    drops: dict[str, dict[str, int]] = {}
    documents_segmented = segments_total = passed = 0
    for row in counts:
        kind, count = row["kind"], int(row["count"])
        if kind == "reject":
            rejects[row["reason"]] = rejects.get(row["reason"], 0) + count
            rejects_by_stage[row["stage"]] = rejects_by_stage.get(row["stage"], 0) + count
        elif kind == "doc":
            documents_segmented += count
            segments_total += int(row.get("n_segments") or 0)
        elif kind == "drop":
            per = drops.setdefault(row["filter"], {})
            per[row["reason"]] = per.get(row["reason"], 0) + count
        elif kind == "segment":
            passed += count
    if duplicates:
        drops["dedup"] = dict(duplicates)
    rejects_total = sum(rejects.values())
    drops_total = sum(sum(v.values()) for v in drops.values())
    documents_in = documents_segmented + rejects_total
    balance_in = documents_in + (segments_total - documents_segmented)
    balance_out = segments_out + rejects_total + drops_total
    return {
        "documents_in": documents_in,
        "documents_segmented": documents_segmented,
        "segments": segments_total,
        "segments_passing_filters": passed,
        "segments_out": segments_out,
        "rejects": {
            "total": rejects_total,
            "by_reason": dict(sorted(rejects.items())),
            "by_stage": dict(sorted(rejects_by_stage.items())),
        },
        "dropped": {
            "total": drops_total,
            "by_filter": {k: sum(v.values()) for k, v in sorted(drops.items())},
            "by_reason": {
                f"{k}.{r}": n for k, v in sorted(drops.items()) for r, n in sorted(v.items())
            },
        },
        "balance": {
            "documents_in + segments_added_by_split": balance_in,
            "segments_out + rejects + dropped": balance_out,
            "ok": balance_in == balance_out and segments_total == segments_out + drops_total,
        },
    }


def format_summary(stats: dict) -> str:
    """The stats as a Markdown table (printed by the CLI, pasted in the README)."""
    lines = [
        "| stage | count |",
        "| --- | ---: |",
        f"| documents in | {stats['documents_in']:,} |",
        f"| documents rejected | {stats['rejects']['total']:,} |",
        f"| documents segmented | {stats['documents_segmented']:,} |",
        f"| segments cut | {stats['segments']:,} |",
    ]
    for key, count in stats["dropped"]["by_reason"].items():
        lines.append(f"| dropped: {key} | {count:,} |")
    lines.append(f"| **segments out** | **{stats['segments_out']:,}** |")
    for reason, count in stats["rejects"]["by_reason"].items():
        lines.append(f"| rejected: {reason} | {count:,} |")
    balance = stats["balance"]
    lines.append(
        f"\nBalance: documents in + segments added by splitting = "
        f"{balance['documents_in + segments_added_by_split']:,} = segments out + rejects + "
        f"dropped = {balance['segments_out + rejects + dropped']:,} "
        f"({'ok' if balance['ok'] else 'MISMATCH'})."
    )
    return "\n".join(lines)
