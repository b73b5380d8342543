"""Reading one input file into records, never raising on bad bytes.

A reader yields :class:`Record` (a document's text or a JSON/Parquet row) or :class:`Reject`
(a unit of input that could not be read, with a reason from ``schema.REJECT_REASONS``). A
truncated gzip stream or archive yields the records before the damage, then one reject.

Memory stays bounded per file: whole documents are read up to ``max_document_bytes`` plus one
byte, JSON lines with a bounded ``readline`` (an enormous line is skipped chunk by chunk, never
held), Parquet in row batches, WARC record by record.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from selfalign.stages.ingest.config import ReadSettings

HTML_SUFFIXES = (".html", ".htm", ".xhtml", ".shtml")
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc", ".arc.gz")
MARKDOWN_SUFFIXES = (".md", ".markdown", ".rst", ".mdx")
TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.I)
_HTTP_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_\-:.]+)", re.I)
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Record:
    """One unit of input: ``value`` is text (a document) or a dict (a JSON/Parquet row)."""

    locator: str  # where it sits in the file: "", "line 3", "row 10", "record @512"
    value: str | dict[str, Any]
    kind: str  # html | markdown | text | row
    source: str | None = None  # overrides the file as source (the WARC target URI)


@dataclass(frozen=True)
class Reject:
    locator: str
    reason: str
    detail: str = ""


Item = Record | Reject


def format_for(path: str) -> str | None:
    """The reader for a path by its suffix, or None when the suffix says nothing."""
    lower = path.lower()
    if lower.endswith(WARC_SUFFIXES):
        return "warc"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    stem = lower[:-3] if lower.endswith(".gz") else lower
    if stem.endswith(HTML_SUFFIXES):
        return "html"
    if stem.endswith(MARKDOWN_SUFFIXES):
        return "markdown"
    if stem.endswith(TEXT_SUFFIXES):
        return "text"
    return None


# --------------------------------------------------------------------------- decoding


def looks_binary(head: bytes, settings: ReadSettings) -> bool:
    """NUL bytes, or too many C0 control characters, in the first bytes: not a text file."""
    sample = head[: settings.binary_sniff_bytes]
    if not sample:
        return False
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False  # UTF-16 text is full of NULs but is text
    if b"\0" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13)) + sample.count(127)
    return controls / len(sample) > settings.max_control_fraction


def declared_charset(data: bytes, content_type: str | None = None) -> str | None:
    """Charset from an HTTP Content-Type or an HTML <meta>, if it names a codec Python knows."""
    found = None
    if content_type:
        match = _HTTP_CHARSET.search(content_type)
        found = match.group(1) if match else None
    if not found:
        match = _META_CHARSET.search(data[:4096])
        found = match.group(1).decode("ascii", "ignore") if match else None
    if not found:
        return None
    try:
        return codecs.lookup(found).name
    except LookupError:
        return None


def decode_text(
    data: bytes, settings: ReadSettings, *, content_type: str | None = None
) -> tuple[str | None, str, str]:
    """``(text, "", "")`` or ``(None, reason, detail)``.

    Order: UTF-16/UTF-8 byte-order marks, a declared charset, strict UTF-8, then UTF-8 with
    replacement when the bad bytes stay under ``max_invalid_utf8_fraction`` (a stray Latin-1
    byte in an otherwise UTF-8 page should not cost the page).
    """
    if not data.strip():
        return None, "empty", f"{len(data)} bytes of whitespace" if data else "0 bytes"
    if looks_binary(data, settings):
        return None, "binary", "NUL or control bytes in the first bytes"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), "", ""
        except UnicodeDecodeError as err:
            return None, "undecodable", f"utf-16: {err.reason} at byte {err.start}"
    charset = declared_charset(data, content_type)
    if charset and charset not in ("utf-8", "ascii"):
        try:
            return data.decode(charset), "", ""
        except (UnicodeDecodeError, LookupError):
            pass  # the declaration lied; fall through to UTF-8
    try:
        return data.decode("utf-8-sig"), "", ""
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    if bad / max(len(text), 1) > settings.max_invalid_utf8_fraction:
        return None, "undecodable", f"{bad} of {len(text)} characters are not valid UTF-8"
    return text, "", ""


# --------------------------------------------------------------------------- streams


def read_bounded(stream: BinaryIO, limit: int) -> bytes | None:
    """Up to ``limit`` bytes; None when the stream holds more (the rest is not read)."""
    chunks = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


class GunzipReader(io.RawIOBase):
    """Streaming gunzip that hands out every byte decoded before damage, then raises.

    ``gzip.GzipFile`` behind a buffered reader raises while filling its buffer, losing the
    complete lines that preceded a truncation; here each ``readinto`` returns what has been
    decoded so far, and the ``EOFError`` comes only when nothing is left to return.
    Concatenated gzip members (as in WARC-style files) are followed.
    """

    def __init__(self, raw: BinaryIO, chunk: int = 1 << 16):
        self._raw = raw
        self._chunk = chunk
        self._inflater = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending and not self._done:
            data = self._raw.read(self._chunk)
            if not data:
                if not self._inflater.eof:
                    self._done = True
                    raise EOFError("compressed stream ended before the end-of-stream marker")
                self._done = True
                break
            self._pending = self._inflater.decompress(data)
            while self._inflater.eof and self._inflater.unused_data:
                rest = self._inflater.unused_data
                self._inflater = zlib.decompressobj(wbits=31)
                self._pending += self._inflater.decompress(rest)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _maybe_gunzip(stream: BinaryIO, path: str) -> BinaryIO:
    if path.lower().endswith(".gz"):
        return io.BufferedReader(GunzipReader(stream), buffer_size=1 << 16)  # type: ignore[return-value]
    return stream


def _damage_reason(err: BaseException) -> tuple[str, str]:
    # A gzip member cut short raises EOFError; a corrupt deflate block raises zlib.error;
    # a bad gzip header raises BadGzipFile. All mean the file was damaged or truncated.
    return "truncated", f"{type(err).__name__}: {err}"


_DAMAGE = (EOFError, zlib.error, gzip.BadGzipFile)


def iter_document(stream: BinaryIO, path: str, kind: str, settings: ReadSettings) -> Iterator[Item]:
    """A whole file as one document (HTML, Markdown, plain text)."""
    try:
        data = read_bounded(_maybe_gunzip(stream, path), settings.max_document_bytes)
    except _DAMAGE as err:
        yield Reject("", *_damage_reason(err))
        return
    if data is None:
        yield Reject("", "too_large", f"more than {settings.max_document_bytes} bytes")
        return
    text, reason, detail = decode_text(data, settings)
    if text is None:
        yield Reject("", reason, detail)
        return
    if kind == "auto":
        kind = sniff_kind(text)
    yield Record("", text, kind)


def sniff_kind(text: str) -> str:
    """A file with no telling suffix: HTML if it starts like markup, else plain text."""
    head = text[:2048].lstrip().lower()
    if head.startswith(("<!doctype html", "<html", "<?xml")) or re.search(
        r"<(body|h[1-6]|p)\b", head
    ):
        return "html"
    return "text"


def iter_jsonl(stream: BinaryIO, path: str, settings: ReadSettings) -> Iterator[Item]:
    """JSON Lines (optionally gzipped); a ``.json`` file holding one array or object also works."""
    limit = settings.max_document_bytes
    reader = _maybe_gunzip(stream, path)
    if not isinstance(reader, io.BufferedReader):
        reader = io.BufferedReader(reader, buffer_size=_READ_CHUNK)  # type: ignore[arg-type]
    line_no = 0
    seen_any = False
    try:
        first = reader.peek(1)[:1]
        if path.lower().endswith((".json", ".json.gz")) and first in (b"[", b"{"):
            yield from _iter_json_document(reader, settings)
            return
        while True:
            line = reader.readline(limit + 1)
            if not line:
                break
            line_no += 1
            if len(line) > limit and not line.endswith(b"\n"):
                # Skip the rest of an enormous line without holding it.
                while line and not line.endswith(b"\n"):
                    line = reader.readline(_READ_CHUNK)
                seen_any = True
                yield Reject(f"line {line_no}", "too_large", f"line longer than {limit} bytes")
                continue
            if not line.strip():
                continue
            seen_any = True
            yield _parse_json_record(line, f"line {line_no}", settings)
    except _DAMAGE as err:
        yield Reject(f"after line {line_no}", *_damage_reason(err))
        return
    if not seen_any:
        yield Reject("", "empty", "no JSON lines")


def _parse_json_record(data: bytes, locator: str, settings: ReadSettings) -> Item:
    text, reason, detail = decode_text(data, settings)
    if text is None:
        return Reject(locator, reason, detail)
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        return Reject(locator, "malformed_json", str(err)[:200])
    if not isinstance(value, dict):
        return Reject(locator, "not_an_object", f"got {type(value).__name__}")
    return Record(locator, value, "row")


def _iter_json_document(reader: BinaryIO, settings: ReadSettings) -> Iterator[Item]:
    data = read_bounded(reader, settings.max_document_bytes)
    if data is None:
        yield Reject("", "too_large", f"JSON file above {settings.max_document_bytes} bytes")
        return
    text, reason, detail = decode_text(data, settings)
    if text is None:
        yield Reject("", reason, detail)
        return
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        yield Reject("", "malformed_json", str(err)[:200])
        return
    items = value if isinstance(value, list) else [value]
    if not items:
        yield Reject("", "empty", "empty JSON array")
    for index, item in enumerate(items):
        if isinstance(item, dict):
            yield Record(f"item {index}", item, "row")
        else:
            yield Reject(f"item {index}", "not_an_object", f"got {type(item).__name__}")


def iter_parquet(
    open_random: Callable[[], Any],
    settings: ReadSettings,
    columns: list[str] | None = None,
) -> Iterator[Item]:
    """Parquet rows in batches; ``columns`` (those present) limits what is read."""
    import pyarrow.parquet as pq

    row = 0
    try:
        parquet = pq.ParquetFile(open_random())
        present = set(parquet.schema_arrow.names)
        wanted = [c for c in columns if c in present] if columns else None
        if parquet.metadata.num_rows == 0:
            yield Reject("", "empty", "Parquet file with no rows")
            return
        for batch in parquet.iter_batches(batch_size=settings.parquet_batch_rows, columns=wanted):
            for value in batch.to_pylist():
                yield Record(f"row {row}", value, "row")
                row += 1
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError variants for damaged files
        yield Reject(
            f"row {row}" if row else "", "corrupt_file", f"{type(err).__name__}: {err}"[:300]
        )


def iter_warc(stream: BinaryIO, settings: ReadSettings) -> Iterator[Item]:
    """WARC/ARC (plain or gzipped): response, resource and conversion records are documents."""
    from warcio.archiveiterator import ArchiveIterator

    limit = settings.max_document_bytes
    index = -1
    documents = 0
    try:
        # (ArchiveIterator.get_record_offset would read the record to its end first, so
        # records are located by their ordinal in the file instead.)
        for index, record in enumerate(ArchiveIterator(stream, arc2warc=True)):
            if record.rec_type not in ("response", "resource", "conversion"):
                continue  # request/warcinfo/metadata/revisit records carry no document
            documents += 1
            locator = f"record {index}"
            uri = record.rec_headers.get_header("WARC-Target-URI") or None
            if record.http_headers is not None:
                content_type = record.http_headers.get_header("Content-Type") or ""
            else:
                content_type = record.rec_headers.get_header("Content-Type") or ""
            mime = content_type.split(";")[0].strip().lower()
            payload = read_bounded(record.content_stream(), limit)
            if payload is not None and getattr(record.raw_stream, "limit", 0) > 0:
                # The record's Content-Length promised more bytes than the file holds: the
                # archive was cut here (warcio does not raise for a cut gzip member).
                yield Reject(locator, "truncated", f"record cut short: {uri}")
                return
            if mime and not (mime.startswith("text/") or "html" in mime or "xml" in mime):
                yield Reject(locator, "unsupported_content", f"{mime} {uri or ''}".strip())
                continue
            if payload is None:
                yield Reject(locator, "too_large", f"payload above {limit} bytes: {uri}")
                continue
            text, reason, detail = decode_text(payload, settings, content_type=content_type)
            if text is None:
                yield Reject(locator, reason, f"{detail} ({uri})")
                continue
            kind = "text" if mime == "text/plain" else "html"
            yield Record(locator, text, kind, source=uri)
    except Exception as err:  # warcio: ArchiveLoadFailed, EOFError, zlib.error, ValueError
        reason = "truncated" if documents else "corrupt_file"
        yield Reject(f"after record {index}", reason, f"{type(err).__name__}: {err}"[:300])
        return
    if documents == 0:
        yield Reject("", "empty", "no response/resource records")


def iter_file(
    open_stream: Callable[[], BinaryIO],
    open_random: Callable[[], Any],
    path: str,
    fmt: str,
    settings: ReadSettings,
    *,
    columns: list[str] | None = None,
) -> Iterator[Item]:
    """Every record (or reject) of one file; ``fmt`` is a reader name or ``auto``."""
    if fmt == "auto":
        fmt = format_for(path) or "sniff"
    try:
        if fmt == "parquet":
            yield from iter_parquet(open_random, settings, columns)
            return
        with open_stream() as stream:
            if fmt == "warc":
                yield from iter_warc(stream, settings)
            elif fmt == "jsonl":
                yield from iter_jsonl(stream, path, settings)
            elif fmt == "sniff":
                yield from iter_document(stream, path, "auto", settings)
            else:
                yield from iter_document(stream, path, fmt, settings)
    except OSError as err:
        yield Reject("", "unreadable", f"{type(err).__name__}: {err}"[:300])


# --------------------------------------------------------------------------- embedded corpus


def embedded_corpus_names() -> list[str]:
    """Installed distributions with a long description, sorted by normalised name.

    These README pages were written by the packages' authors, ship inside every install and
    need no network: the embedded default corpus for demos and tests.
    """
    from importlib import metadata

    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").strip()
        if name and _long_description(dist):
            names.add(_normalise_name(name))
    return sorted(names)


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _long_description(dist: Any) -> str:
    meta = dist.metadata
    body = meta.get_payload() if hasattr(meta, "get_payload") else None
    if isinstance(body, str) and body.strip():
        return body
    header = meta.get("Description") or ""
    if header.strip() and header.strip() != "UNKNOWN":
        # Metadata 1.x folds the description into a header: continuation lines start with
        # eight spaces (or "       |" from older setuptools).
        lines = header.splitlines()
        rest = [re.sub(r"^( {8}|       \|)", "", line) for line in lines[1:]]
        return "\n".join([lines[0], *rest])
    return ""


def iter_embedded(name: str, settings: ReadSettings) -> Iterator[Item]:
    """The README of one installed distribution as a Markdown-like document."""
    from importlib import metadata

    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        yield Reject("", "unreadable", f"distribution {name} is not installed here")
        return
    data = _long_description(dist).encode("utf-8", "surrogatepass")
    if len(data) > settings.max_document_bytes:
        yield Reject("", "too_large", f"more than {settings.max_document_bytes} bytes")
        return
    text, reason, detail = decode_text(data, settings)
    if text is None:
        yield Reject("", reason, detail)
        return
    content_type = (dist.metadata.get("Description-Content-Type") or "").lower()
    kind = "html" if "html" in content_type else "markdown"
    yield Record("", text, kind)
