"""Arrow schemas of the ingest outputs, stable ids, and the reject reasons.

Output datasets of ``selfalign ingest corpus`` (Parquet, one directory each):

* ``segments/`` (:data:`SEGMENT_SCHEMA`): one clean, deduplicated segment per row;
* ``rejects/`` (:data:`REJECT_SCHEMA`): inputs that could not become segments, with a reason;
* ``drops/`` (:data:`DROP_SCHEMA`): segments removed by a filter (text left out);
* ``duplicates/`` (:data:`DUPLICATE_SCHEMA`): segments removed as duplicates, with the survivor.

``selfalign ingest seed`` writes ``pairs/`` (:data:`SEED_SCHEMA`), ``rejects/`` and ``drops/``.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

ID_HEX_CHARS = 24  # 96 bits: collision-free in practice far beyond 50M segments

MESSAGE_TYPE = pa.struct([("role", pa.string()), ("content", pa.string())])

SEGMENT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # sha256(source \0 text), hex prefix: stable across reruns
        ("doc_id", pa.string()),  # sha256(source \0 locator) of the document it came from
        ("source", pa.string()),  # file path, object-store URI, WARC target URI or package
        ("position", pa.int32()),  # index of the segment within its document
        ("header", pa.string()),  # the header it sits under (null for header-less text)
        ("text", pa.string()),  # header line, then the text under it
        ("n_chars", pa.int64()),
        ("lang", pa.string()),  # language identified (null when the filter is off)
        ("lang_score", pa.float32()),
    ]
)

REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),  # file (or package) the bad input came from
        ("doc_id", pa.string()),  # null when no document could be told apart
        ("locator", pa.string()),  # where in the file: "line 17", "record @1234", "row 5", ""
        ("stage", pa.string()),  # read | segment | convert
        ("reason", pa.string()),  # see REJECT_REASONS
        ("detail", pa.string()),
    ]
)

DROP_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("doc_id", pa.string()),
        ("source", pa.string()),
        ("header", pa.string()),
        ("n_chars", pa.int64()),
        ("filter", pa.string()),  # length | header | repetition | language (seed: selection)
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

DUPLICATE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # the removed segment
        ("survivor_id", pa.string()),  # the segment kept in its cluster (the smallest id)
        ("reason", pa.string()),  # exact_duplicate | near_duplicate
    ]
)

SEED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # sha256(source \0 instruction \0 response), hex prefix
        ("instruction", pa.string()),
        ("response", pa.string()),
        ("source", pa.string()),  # oasst1 | alpaca | sharegpt | messages | pairs | seed | custom
        ("messages", pa.list_(MESSAGE_TYPE)),  # whole conversation for multi-turn inputs, else null
    ]
)

# Every reason a document or record can be rejected for; the stats list them by these names.
REJECT_REASONS = {
    "empty": "a file or record with no bytes (or only whitespace), or no records at all",
    "binary": "NUL bytes or too many control characters: not text",
    "undecodable": "too many bytes that are not valid in the declared/UTF-8 encoding",
    "too_large": "document, record or line above read.max_document_bytes",
    "truncated": "gzip stream or archive ended mid-record; records before it are kept",
    "malformed_json": "a JSON line or file that does not parse",
    "not_an_object": "a JSON value that is not an object (record)",
    "missing_field": "the text column (or a required seed field) is absent or empty",
    "corrupt_file": "a Parquet or WARC file that cannot be opened",
    "unsupported_content": "a WARC response whose payload is not HTML or text (images, PDF)",
    "unreadable": "the filesystem refused to open or read the file",
    "no_headers": "HTML/Markdown without any header (segment.headerless=reject)",
    "no_text": "nothing left after removing markup and boilerplate",
    "bad_conversation": "a chat record without a user turn followed by an assistant turn",
}


def stable_id(*parts: str) -> str:
    """Hex prefix of sha256 over the parts joined by NUL: the same inputs give the same id.

    >>> stable_id("a.html", "Hello") == stable_id("a.html", "Hello")
    True
    >>> stable_id("a.html", "Hello") != stable_id("b.html", "Hello")
    True
    """
    digest = hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:ID_HEX_CHARS]


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()
