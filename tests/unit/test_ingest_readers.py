"""Readers: every format and every bad-input kind, on files the tests write (no Ray)."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from selfalign.stages.ingest import corpus, readers
from selfalign.stages.ingest.config import CorpusIngestConfig, ReadSettings
from tests.ingest_helpers import html_page, paragraph, warc_bytes, write_corpus

SETTINGS = ReadSettings(max_document_bytes=65536)


def read(path: Path, settings: ReadSettings = SETTINGS, fmt: str = "auto", columns=None):
    fs = pafs.LocalFileSystem()
    return list(
        readers.iter_file(
            lambda: fs.open_input_stream(str(path), compression=None),
            lambda: fs.open_input_file(str(path)),
            str(path),
            fmt,
            settings,
            columns=columns,
        )
    )


def reasons(items) -> list[str]:
    return [i.reason for i in items if isinstance(i, readers.Reject)]


def test_format_by_suffix():
    assert readers.format_for("a/b.HTML") == "html"
    assert readers.format_for("x.warc.gz") == "warc"
    assert readers.format_for("x.jsonl.gz") == "jsonl"
    assert readers.format_for("x.md") == "markdown"
    assert readers.format_for("x.rst") == "markdown"
    assert readers.format_for("x.txt") == "text"
    assert readers.format_for("x.pq") == "parquet"
    assert readers.format_for("x.bin") is None


def test_html_markdown_and_text_files(tmp_path):
    rng = random.Random(1)
    (tmp_path / "a.html").write_text(html_page(rng, 2, "Hello"))
    (tmp_path / "b.md").write_text("# Title\n\n" + paragraph(rng, 300))
    (tmp_path / "c.txt").write_text(paragraph(rng, 300))
    (tmp_path / "noext").write_text("<html><body><h1>x</h1><p>y</p></body></html>")
    kinds = {p: [i.kind for i in read(tmp_path / p)] for p in ("a.html", "b.md", "c.txt", "noext")}
    assert kinds == {"a.html": ["html"], "b.md": ["markdown"], "c.txt": ["text"], "noext": ["html"]}


def test_jsonl_rows_and_bad_lines(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(
        b'{"text": "one"}\n\n{"text": "tw\n[1, 2]\n'
        + b'{"text": "' + b"x" * 100_000 + b'"}\n'
        + b'{"text": "\xff\xfe\xfa\xfb\xfc\xfd"}\n{"text": "last"}\n'
    )  # fmt: skip
    items = read(path)
    assert [i.locator for i in items] == [f"line {n}" for n in (1, 3, 4, 5, 6, 7)]
    assert reasons(items) == ["malformed_json", "not_an_object", "too_large", "undecodable"]
    assert [i.value["text"] for i in items if isinstance(i, readers.Record)] == ["one", "last"]


def test_enormous_line_is_skipped_without_losing_the_next(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("wb") as f:
        f.write(b'{"text": "' + b"y" * (3 * 2**20) + b'"}\n{"text": "after"}\n')
    items = read(path, ReadSettings(max_document_bytes=4096))
    assert reasons(items) == ["too_large"]
    assert items[-1].value == {"text": "after"}


def test_json_array_file(tmp_path):
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps([{"a": 1}, 3, {"b": 2}]))
    items = read(path)
    assert [type(i).__name__ for i in items] == ["Record", "Reject", "Record"]
    assert reasons(items) == ["not_an_object"]


def test_truncated_gzip_keeps_lines_before_the_damage(tmp_path):
    lines = "".join(
        json.dumps({"text": paragraph(random.Random(i), 2000)}) + "\n" for i in range(40)
    )
    data = gzip.compress(lines.encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    items = read(path)
    records = [i for i in items if isinstance(i, readers.Record)]
    assert 5 < len(records) < 40
    assert reasons(items)[-1] == "truncated"
    assert items[-1].locator.startswith("after line")


def test_gzip_multi_member(tmp_path):
    path = tmp_path / "two.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n') + gzip.compress(b'{"text": "b"}\n'))
    assert [i.value["text"] for i in read(path)] == ["a", "b"]


def test_parquet_rows_columns_and_corrupt_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rw.parquet"
    pq.write_table(pa.table({"content": ["a", "b"], "url": ["u1", "u2"], "big": ["x", "y"]}), path)
    items = read(path, columns=["content", "url"])
    assert [i.value for i in items] == [
        {"content": "a", "url": "u1"},
        {"content": "b", "url": "u2"},
    ]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    assert reasons(read(bad)) == ["corrupt_file"]


def test_warc_records_and_truncation(tmp_path):
    rng = random.Random(3)
    pages = [(f"https://example.org/{i}", html_page(rng, 2, f"P{i}")) for i in range(3)]
    whole = warc_bytes(pages)
    path = tmp_path / "a.warc.gz"
    path.write_bytes(whole)
    items = read(path)
    assert [i.source for i in items] == [u for u, _ in pages]
    assert {i.kind for i in items} == {"html"}
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(whole[:-500])
    items = read(cut)
    assert [i.source for i in items if isinstance(i, readers.Record)] == [pages[0][0], pages[1][0]]
    assert reasons(items) == ["truncated"]
    plain = tmp_path / "plain.warc"
    plain.write_bytes(warc_bytes(pages[:1], gzip_records=False))
    assert [i.source for i in read(plain)] == [pages[0][0]]


def test_empty_binary_undecodable_and_mostly_utf8(tmp_path):
    (tmp_path / "empty.html").write_bytes(b"")
    (tmp_path / "blank.md").write_bytes(b"  \n\n ")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    (tmp_path / "latin.txt").write_bytes(bytes(range(0x80, 0x100)) * 20)
    (tmp_path / "mostly.txt").write_bytes(("caf\xe9 ".encode("latin-1")) + b"plain text " * 200)
    (tmp_path / "declared.html").write_bytes(
        b"<html><head><meta charset='iso-8859-1'></head><body><h1>Caf\xe9</h1></body></html>"
    )
    got = {p.name: reasons(read(p)) for p in sorted(tmp_path.iterdir())}
    assert got == {
        "blank.md": ["empty"],
        "declared.html": [],
        "empty.html": ["empty"],
        "img.png": ["binary"],
        "latin.txt": ["undecodable"],
        "mostly.txt": [],
    }
    assert "Café" in read(tmp_path / "declared.html")[0].value


def test_unreadable_path_is_a_reject(tmp_path):
    assert reasons(read(tmp_path / "missing.html")) == ["unreadable"]


def test_corpus_rows_account_for_every_input(tmp_path):
    """The pure chain over the whole test corpus: each file's ledger rows, by kind/reason."""
    paths = write_corpus(tmp_path)
    config = CorpusIngestConfig(text_column="content", read=SETTINGS)
    by_file: dict[str, Counter] = {}
    for name, path in paths.items():
        items = read(path, columns=["content", "url"])
        rows = list(corpus.source_rows(iter(items), str(path), config))
        by_file[name] = Counter((r["kind"], r.get("reason") or "") for r in rows)
    assert by_file["empty"] == Counter({("reject", "empty"): 1})
    assert by_file["binary"] == Counter({("reject", "binary"): 1})
    assert by_file["undecodable"] == Counter({("reject", "undecodable"): 1})
    assert by_file["no_headers"] == Counter({("reject", "no_headers"): 1})
    assert by_file["truncated_gzip"][("reject", "truncated")] == 1
    assert by_file["truncated_gzip"][("doc", "")] >= 1
    assert by_file["truncated_warc"][("reject", "truncated")] == 1
    assert by_file["jsonl"][("reject", "malformed_json")] == 1
    assert by_file["jsonl"][("reject", "missing_field")] == 1
    assert by_file["jsonl"][("reject", "too_large")] == 1
    assert by_file["jsonl"][("doc", "")] == 2
    for name in ("html", "markdown", "text", "warc", "parquet"):
        assert by_file[name][("segment", "")] >= 1, name


def test_embedded_corpus_is_installed_readmes_sorted():
    names = readers.embedded_corpus_names()
    assert names == sorted(names)
    assert len(names) >= 20
    assert "pyarrow" in names and "ray" in names
    items = list(readers.iter_embedded("pyarrow", ReadSettings()))
    assert len(items) == 1 and isinstance(items[0], readers.Record)
    assert "Arrow" in items[0].value


def test_pure_ingest_modules_do_not_import_heavy_stacks():
    code = (
        "import sys\n"
        "import selfalign.stages.ingest.corpus, selfalign.stages.ingest.seed, selfalign.stages.ingest.dedup\n"
        "import selfalign.stages.ingest.filters, selfalign.stages.ingest.segment, selfalign.stages.ingest.readers\n"
        "bad = [m for m in ('ray', 'vllm', 'torch') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("limit", [1024, 4096])
def test_read_bounded(limit):
    import io

    assert readers.read_bounded(io.BytesIO(b"a" * limit), limit) == b"a" * limit
    assert readers.read_bounded(io.BytesIO(b"a" * (limit + 1)), limit) is None
