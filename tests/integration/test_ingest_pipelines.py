"""The ingest pipelines on a real local Ray cluster, on files the tests write."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from selfalign.core.config import build_config
from selfalign.stages.ingest import readers
from selfalign.stages.ingest.config import CorpusIngestConfig, ReadSettings, SeedIngestConfig
from selfalign.stages.ingest.schema import (
    DROP_SCHEMA,
    DUPLICATE_SCHEMA,
    REJECT_SCHEMA,
    SEED_SCHEMA,
    SEGMENT_SCHEMA,
    stable_id,
)
from tests.ingest_helpers import write_corpus, write_seed_inputs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def table(path: Path):
    return pads.dataset(str(path), format="parquet").to_table()


def corpus_config(inputs: list[str], output: Path) -> CorpusIngestConfig:
    return build_config(
        CorpusIngestConfig,
        None,
        {
            "inputs": inputs,
            "output": str(output),
            "text_column": "content",
            "read": {"max_document_bytes": 65536},
            "dedup": {"num_partitions": 2},
        },
    )


@pytest.fixture(scope="module")
def corpus_run(ray_cluster, tmp_path_factory):
    from selfalign.stages.ingest import pipeline as ingest

    root = tmp_path_factory.mktemp("corpus")
    paths = write_corpus(root / "in")
    config = corpus_config([str(root / "in")], root / "out")
    sources, filesystems = ingest.expand_sources(config.inputs)
    stats = ingest.run_corpus(config, sources, filesystems)
    return paths, root / "out", stats, sources


def test_outputs_have_documented_schemas(corpus_run):
    _, out, stats, _ = corpus_run
    assert table(out / "segments").schema == SEGMENT_SCHEMA
    assert table(out / "rejects").schema == REJECT_SCHEMA
    assert table(out / "drops").schema == DROP_SCHEMA
    assert table(out / "duplicates").schema == DUPLICATE_SCHEMA
    saved = json.loads((out / "ingest-stats.json").read_text())
    assert saved["segments_out"] == stats["segments_out"]
    assert not (out / "_staging").exists()


def test_every_bad_input_is_a_reject_with_source_and_reason(corpus_run):
    paths, out, stats, _ = corpus_run
    rejects = table(out / "rejects").to_pylist()
    by_file = {(Path(r["source"]).name, r["reason"]) for r in rejects}
    expected = {
        (paths["empty"].name, "empty"),
        (paths["binary"].name, "binary"),
        (paths["undecodable"].name, "undecodable"),
        (paths["no_headers"].name, "no_headers"),
        (paths["truncated_gzip"].name, "truncated"),
        (paths["truncated_warc"].name, "truncated"),
        (paths["jsonl"].name, "malformed_json"),
        (paths["jsonl"].name, "missing_field"),
        (paths["jsonl"].name, "too_large"),  # the enormous line
    }
    assert by_file == expected
    assert stats["rejects"]["by_reason"] == dict(
        sorted(Counter(r["reason"] for r in rejects).items())
    )
    assert all(r["stage"] in ("read", "segment") and r["doc_id"] for r in rejects)
    jsonl_lines = sorted(r["locator"] for r in rejects if r["source"].endswith("rows.jsonl"))
    assert jsonl_lines == ["line 3", "line 4", "line 5"]


def test_counts_add_up_and_match_the_outputs(corpus_run):
    paths, out, stats, _ = corpus_run
    # Documents counted independently: units each reader yields for the good files.
    cut = paths["truncated_gzip"]
    with cut.open("rb") as stream:
        items = readers.iter_jsonl(stream, str(cut), ReadSettings(max_document_bytes=65536))
        truncated_docs = sum(isinstance(i, readers.Record) for i in items)
    # html x4, markdown, text, 2 WARC pages, 2 JSON lines, 3 Parquet rows, 2 WARC pages before the cut
    assert stats["documents_segmented"] == 4 + 1 + 1 + 2 + 2 + 3 + 2 + truncated_docs
    assert stats["documents_in"] == stats["documents_segmented"] + stats["rejects"]["total"]
    assert stats["segments_out"] == table(out / "segments").num_rows
    assert stats["rejects"]["total"] == table(out / "rejects").num_rows
    filter_drops = stats["dropped"]["total"] - stats["dropped"]["by_filter"].get("dedup", 0)
    assert filter_drops == table(out / "drops").num_rows
    assert stats["dropped"]["by_filter"]["dedup"] == table(out / "duplicates").num_rows
    assert stats["segments"] == stats["segments_out"] + stats["dropped"]["total"]
    assert (
        stats["documents_in"] + stats["segments"] - stats["documents_segmented"]
        == stats["segments_out"] + stats["rejects"]["total"] + stats["dropped"]["total"]
    )
    assert stats["balance"]["ok"]


def test_duplicates_across_files_and_blocks_are_removed(corpus_run):
    paths, out, stats, sources = corpus_run
    # Each input file is its own block here (fewer files than 4 x CPUs), and the copies sit in
    # different directories: only a global shuffle can bring them together.
    assert len(sources) <= 16
    segments = table(out / "segments").to_pylist()
    ids = [s["id"] for s in segments]
    assert len(ids) == len(set(ids))
    copies = {str(paths[k]) for k in ("dup_a", "dup_b", "near")}
    survivors = [s for s in segments if s["source"] in copies]
    assert len(survivors) == 3  # one per section of the shared page
    texts = Counter(" ".join(s["text"].lower().split()) for s in segments)
    assert max(texts.values()) == 1
    duplicates = table(out / "duplicates").to_pylist()
    assert Counter(d["reason"] for d in duplicates) == {"exact_duplicate": 5, "near_duplicate": 1}
    # Each removed segment points at a smaller id. Clusters are not closed transitively,
    # so that id may itself have been removed (B -> A exact, A -> N near when N < A < B;
    # ids hash the source path, so the order varies between runs): following the links
    # always ends at a kept segment.
    kept = {s["id"] for s in segments}
    survivor_of = {d["id"]: d["survivor_id"] for d in duplicates}
    for dup in duplicates:
        assert dup["survivor_id"] < dup["id"]
        current = dup["survivor_id"]
        while current in survivor_of:
            current = survivor_of[current]
        assert current in kept


def test_every_reader_contributes_segments(corpus_run):
    paths, out, _, _ = corpus_run
    sources = {s["source"] for s in table(out / "segments").to_pylist()}
    assert str(paths["html"]) in sources
    assert str(paths["markdown"]) in sources
    assert str(paths["text"]) in sources
    assert "https://example.org/0" in sources  # WARC target URI
    assert "https://web.example/one" in sources  # JSONL url column
    assert "https://rw.example/a" in sources  # Parquet url column
    segment = next(
        s for s in table(out / "segments").to_pylist() if s["source"] == str(paths["html"])
    )
    assert segment["text"].startswith(segment["header"] + "\n")
    assert 600 <= segment["n_chars"] <= 3000 and segment["lang"] == "en"


def test_rerun_gives_identical_ids(corpus_run, tmp_path):
    from selfalign.stages.ingest import pipeline as ingest

    paths, out, _, _ = corpus_run
    # The same inputs under the same paths, a second time (a subset keeps the test short:
    # the copies, so that dedup survivors are compared too).
    subset = [str(paths[k]) for k in ("html", "dup_a", "dup_b", "near", "warc")]
    config = corpus_config(subset, tmp_path / "again")
    sources, filesystems = ingest.expand_sources(config.inputs)
    ingest.run_corpus(config, sources, filesystems)
    first = {
        s["id"]
        for s in table(out / "segments").to_pylist()
        if s["doc_id"]
        and s["source"] in set(subset) | {"https://example.org/0", "https://example.org/1"}
    }
    second = {s["id"] for s in table(tmp_path / "again" / "segments").to_pylist()}
    assert first == second and len(second) >= 6


def test_seed_pipeline_all_formats(ray_cluster, tmp_path):
    from selfalign.core.embedded import seed_pairs_path
    from selfalign.stages.ingest import pipeline as ingest

    write_seed_inputs(tmp_path / "in")
    inputs = [str(tmp_path / "in"), seed_pairs_path()]  # the embedded set reads as plain pairs
    config = build_config(
        SeedIngestConfig, None, {"inputs": inputs, "output": str(tmp_path / "out"), "oasst": {"top_n": 2}}
    )  # fmt: skip
    sources, filesystems = ingest.expand_sources(config.inputs)
    stats = ingest.run_seed(config, sources, filesystems)
    pairs = table(tmp_path / "out" / "pairs")
    assert pairs.schema == SEED_SCHEMA
    rows = pairs.to_pylist()
    by_source = Counter(r["source"] for r in rows)
    embedded_rows = [json.loads(line) for line in Path(seed_pairs_path()).read_text().splitlines()]
    embedded = len(embedded_rows)
    assert by_source == {
        "oasst1": 2,
        "alpaca": 2,
        "sharegpt": 1,
        "messages": 1,
        "pairs": 1 + embedded,
    }
    expected_ids = {stable_id("pairs", r["instruction"], r["response"]) for r in embedded_rows}
    assert expected_ids <= {r["id"] for r in rows if r["source"] == "pairs"}
    oasst = sorted(r["instruction"] for r in rows if r["source"] == "oasst1")
    assert oasst[0].endswith("Case 0.") and oasst[1].startswith("What are three good reasons")
    share = next(r for r in rows if r["source"] == "sharegpt")
    assert len(share["messages"]) == 4 and share["messages"][0] == {
        "role": "user",
        "content": "Hi, what is 2+2?",
    }
    assert stats["pairs_out"] == 7 + embedded
    assert stats["records_in"] == 16 + 1 + 3 + 2 + 1 + 3 + embedded
    assert stats["oasst_messages"] == 16 and stats["oasst_trees"] == 5
    assert stats["dropped"]["by_reason"] == {"below_top_n": 2, "not_english": 1, "too_short": 1}
    assert stats["rejects"]["by_reason"] == {
        "bad_conversation": 1,
        "malformed_json": 1,
        "missing_field": 1,
        "not_an_object": 1,
    }
    assert stats["candidates"] == stats["pairs_out"] + stats["dropped"]["total"]
    assert table(tmp_path / "out" / "rejects").num_rows == 4
