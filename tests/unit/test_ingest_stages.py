"""Segmentation, filters, dedup keys, seed conversion and the stats ledger (pure, no Ray)."""

from __future__ import annotations

import json
import random
from importlib import resources

import pytest

from selfalign.core.config import build_config
from selfalign.core.errors import ConfigError
from selfalign.stages.ingest import corpus, dedup, filters, seed
from selfalign.stages.ingest.config import (
    CorpusIngestConfig,
    DedupSettings,
    FilterSettings,
    OasstSelection,
    RepetitionFilter,
    SeedIngestConfig,
    SegmentSettings,
)
from selfalign.stages.ingest.schema import stable_id
from selfalign.stages.ingest.segment import segment_document, segment_html, segment_markdown
from tests.ingest_helpers import html_page, paragraph

# --------------------------------------------------------------------------- segmentation


def test_html_segments_keep_headers_and_drop_boilerplate():
    html = html_page(random.Random(2), sections=3, title="River gardens")
    sections = segment_html(html, SegmentSettings())
    assert [s.header for s in sections][0] == "River gardens"
    assert len(sections) == 3
    joined = "\n".join(s.text for s in sections)
    for boilerplate in ("Archive", "window.track", "Copyright", "Privacy", "color: red", "Home"):
        assert boilerplate not in joined
    assert sections[1].text.startswith(sections[1].header + "\n")


def test_html_text_before_first_header_and_pre_blocks():
    html = (
        "<body><p>intro words</p><h2>Code <em>sample</em></h2><p>Run this:</p>"
        "<pre>def f():\n    return 1</pre><div role='navigation'>skip me</div>"
        "<div class='cookie-banner'>cookies</div><h3>Next</h3><ul><li>one</li><li>two</li></ul></body>"
    )
    sections = segment_html(html, SegmentSettings())
    assert [(s.header, s.body) for s in sections] == [
        ("", "intro words"),
        ("Code sample", "Run this:\ndef f():\n    return 1"),
        ("Next", "one\ntwo"),
    ]


def test_deeply_nested_html_does_not_recurse():
    html = "<body><h1>Deep</h1>" + "<div>" * 5000 + "text" + "</div>" * 5000 + "</body>"
    assert segment_html(html, SegmentSettings())[0].body == "text"


def test_markdown_atx_setext_and_rst_headings():
    text = (
        "Intro line\n\n# First\n\nBody one with [a link](http://x) and ![badge](b.svg).\n\n"
        "```\n# not a heading\n```\n\nSecond\n======\n\nBody two.\n\n"
        "=====\nThird\n=====\n\nBody three.\n"
    )
    sections = segment_markdown(text)
    assert [s.header for s in sections] == ["", "First", "Second", "Third"]
    assert "a link" in sections[1].body and "badge" not in sections[1].body
    assert "# not a heading" in sections[1].body
    assert sections[3].body == "Body three."


def test_headerless_documents_rejected_or_kept_whole():
    html = "<html><body><p>only text</p></body></html>"
    assert segment_document(html, "html", SegmentSettings()) == ([], "no_headers")
    kept, reason = segment_document(html, "html", SegmentSettings(headerless="whole"))
    assert reason == "" and kept[0].header is None and kept[0].text == "only text"
    assert (
        segment_document("<html><body><script>x</script></body></html>", "html", SegmentSettings())[
            1
        ]
        == "no_text"
    )
    text_sections, _ = segment_document("plain words", "text", SegmentSettings())
    assert text_sections[0].header is None


# --------------------------------------------------------------------------- filters


def test_filters_in_order_first_failure_counts():
    settings = FilterSettings()
    good = "Growing herbs\n" + paragraph(random.Random(5), 900)
    assert filters.check_segment(good, "Growing herbs", settings).passed
    assert filters.check_segment("short", "Growing herbs", settings).reason == "too_short"
    assert filters.check_segment("x" * 4000, "h", settings).reason == "too_long"
    assert filters.check_segment(good, "", settings).reason == "empty_header"
    assert filters.check_segment(good, "SPECIAL OFFERS", settings).reason == "all_caps_header"
    assert (
        filters.check_segment(good, "Join our newsletter", settings).reason == "navigation_header"
    )
    repeated = "Great deals\n" + " ".join(["Buy the best shoes online today at low prices."] * 15)
    assert filters.check_segment(repeated, "Great deals", settings).filter == "repetition"
    french = "Le jardin\n" + " ".join(
        ["Le jardin est très beau au printemps et les enfants jouent souvent près de la rivière."]
        + [
            f"Nous avons planté {n} arbres fruitiers derrière la maison de campagne cette année."
            for n in range(12)
        ]
    )
    verdict = filters.check_segment(
        french,
        "Le jardin",
        settings.model_copy(update={"repetition": RepetitionFilter(enabled=False)}),
    )
    assert (verdict.filter, verdict.reason, verdict.lang) == ("language", "other_language", "fr")


def test_navigation_words_need_a_short_header():
    assert filters.header_reason("Comments", filters.HeaderFilter()) == "navigation_header"
    long_header = "Why the comments in your code should explain intent rather than mechanics"
    assert filters.header_reason(long_header, filters.HeaderFilter()) == ""


def test_repetition_ignores_code_blocks():
    text = "Intro sentence with several words.\n```\nimport os\nimport os\nimport os\n```\nA closing remark follows here."
    assert filters.repeated_sentence_fraction(text, RepetitionFilter()) == 0.0


# --------------------------------------------------------------------------- dedup


def test_minhash_estimates_jaccard_and_bands_match_near_duplicates():
    settings = DedupSettings()
    base = paragraph(random.Random(11), 2000)
    near = base.replace("The ", "A ", 2)
    other = paragraph(random.Random(12), 2000)
    sig_base, sig_near, sig_other = (dedup.minhash(t, settings) for t in (base, near, other))
    estimate = float((sig_base == sig_near).mean())
    assert abs(estimate - dedup.jaccard(base, near, settings.shingle_words)) < 0.12
    assert float((sig_base == sig_other).mean()) < 0.1
    bands_base = dedup.band_keys(sig_base, settings)
    assert set(bands_base) & set(dedup.band_keys(sig_near, settings))
    assert not set(bands_base) & set(dedup.band_keys(sig_other, settings))
    assert bands_base == dedup.band_keys(dedup.minhash(base, settings), settings)  # stable


def test_exact_key_normalises_case_and_space():
    assert dedup.exact_key("A  b\nC") == dedup.exact_key("a b c")
    assert dedup.exact_key("a b c") != dedup.exact_key("a b d")


def test_group_losers_keeps_smallest_id_regardless_of_order():
    forward = dedup.group_losers(["c", "a", "b"], ["u3", "u1", "u2"], exact=True)
    backward = dedup.group_losers(["b", "a", "c"], ["u2", "u1", "u3"], exact=True)
    assert sorted(forward) == sorted(backward)
    assert {row[2] for row in forward} == {"a"}
    assert {row[1] for row in forward} == {"b", "c"}
    assert dedup.group_losers(["a"], ["u1"], exact=False) == []


def test_dedup_settings_validate_bands():
    with pytest.raises(ValueError):
        DedupSettings(num_perm=128, bands=10, rows_per_band=8)


def test_stable_ids():
    assert stable_id("s", "t") == stable_id("s", "t")
    assert stable_id("s", "t") != stable_id("s2", "t")
    assert stable_id("ab", "c") != stable_id("a", "bc")
    assert len(stable_id("x")) == 24


# --------------------------------------------------------------------------- configs


def test_corpus_config_overrides_and_errors(tmp_path):
    config = build_config(
        CorpusIngestConfig, None, ["filters.length.min_chars=100", "text_column=content"]
    )
    assert config.filters.length.min_chars == 100 and config.text_column == "content"
    with pytest.raises(ConfigError, match="max_chars"):
        build_config(CorpusIngestConfig, None, ["filters.length.min_chars=5000"])
    with pytest.raises(ConfigError, match="filtres"):
        build_config(CorpusIngestConfig, None, ["filtres.length.min_chars=5"])


# --------------------------------------------------------------------------- seed


def test_seed_formats_convert_to_one_schema():
    config = SeedIngestConfig()
    alpaca = seed.record_row(
        {"instruction": "Translate.", "input": "Hi", "output": "Salut"}, "f", "item 0", config
    )
    assert (alpaca["kind"], alpaca["instruction"], alpaca["source"]) == (
        "pair",
        "Translate.\n\nHi",
        "alpaca",
    )
    share = seed.record_row(
        {"conversations": [{"from": "human", "value": "Q1"}, {"from": "gpt", "value": "A1"}, {"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]},
        "f", "line 1", config,
    )  # fmt: skip
    assert (share["instruction"], share["response"], len(share["messages"])) == ("Q1", "A1", 4)
    chat = seed.record_row(
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
        "f",
        "row 0",
        config,
    )
    assert (chat["instruction"], chat["response"], chat["messages"]) == ("Q", "A", None)
    pairs = seed.record_row({"instruction": "Q", "response": "A"}, "f", "line 1", config)
    assert pairs["id"] == stable_id("pairs", "Q", "A")
    bad = seed.record_row(
        {"conversations": [{"from": "gpt", "value": "first"}]}, "f", "line 2", config
    )
    assert (bad["kind"], bad["reason"]) == ("reject", "bad_conversation")
    unknown = seed.record_row({"foo": 1}, "f", "line 3", config)
    assert (unknown["kind"], unknown["reason"]) == ("reject", "missing_field")


def test_oasst_selection_rules():
    selection = OasstSelection()
    long_q, long_a = (
        "please explain how rivers carry sand",
        "rivers carry sand when the water runs fast",
    )
    root = {"message_id": "t", "text": long_q, "lang": "en", "usable": True}
    reply0 = {"role": "assistant", "rank": 0, "text": long_a, "quality": 0.8, "usable": True}
    reply1 = {"role": "assistant", "rank": 1, "text": "other " * 10, "quality": 0.9, "usable": True}
    pair = seed.select_oasst(root, [reply1, reply0], selection)
    assert isinstance(pair, seed.Pair) and pair.response == long_a and pair.quality == 0.8
    assert seed.select_oasst({**root, "lang": "de"}, [reply0], selection)[0] == "not_english"
    assert seed.select_oasst(root, [reply1], selection)[0] == "no_rank0_reply"
    assert seed.select_oasst({**root, "text": "too short"}, [reply0], selection)[0] == "too_short"
    assert seed.select_oasst(root, [{**reply0, "usable": False}], selection)[0] == "no_rank0_reply"
    assert seed.select_oasst(None, [reply0], selection)[0] == "no_root_prompt"


def test_embedded_seed_set_is_valid_and_varied():
    path = resources.files("selfalign") / "data" / "seed_pairs.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) >= 60
    assert len({r["instruction"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"id", "instruction", "response", "source"}
        assert row["source"] == "seed"
        assert row["id"] == stable_id("seed", row["instruction"], row["response"])
        assert len(row["response"]) > 20
    assert sum("```" in r["response"] for r in rows) >= 8  # code answers
    assert sum(r["response"].lstrip().startswith(("-", "1.")) for r in rows) >= 10  # lists


# --------------------------------------------------------------------------- ledger


def test_ledger_balances_and_reports_by_reason():
    counts = [
        {"kind": "reject", "stage": "read", "filter": "", "reason": "binary", "count": 2},
        {"kind": "reject", "stage": "segment", "filter": "", "reason": "no_headers", "count": 1},
        {
            "kind": "doc",
            "stage": "segment",
            "filter": "",
            "reason": "",
            "count": 3,
            "n_segments": 10,
        },
        {"kind": "drop", "stage": "filter", "filter": "length", "reason": "too_short", "count": 4},
        {"kind": "segment", "stage": "filter", "filter": "", "reason": "", "count": 6},
    ]
    stats = corpus.ledger(counts, segments_out=5, duplicates={"exact_duplicate": 1})
    assert stats["documents_in"] == 6
    assert stats["rejects"]["by_reason"] == {"binary": 2, "no_headers": 1}
    assert stats["dropped"]["by_filter"] == {"dedup": 1, "length": 4}
    assert stats["balance"]["ok"] is True
    broken = corpus.ledger(counts, segments_out=4, duplicates={"exact_duplicate": 1})
    assert broken["balance"]["ok"] is False
    assert "| documents in | 6 |" in corpus.format_summary(stats)


# --------------------------------------------------------------------------- CLI


def test_cli_parses_ingest_commands_into_configs():
    from selfalign.cli import build_parser
    from selfalign.cli.ingest import resolve_corpus_config, resolve_seed_config

    parser = build_parser()
    args = parser.parse_args(
        ["ingest", "corpus", "--input", "a/", "--input", "b.warc.gz", "--text-column", "content",
         "--output", "o", "dedup.bands=32", "dedup.rows_per_band=4"]
    )  # fmt: skip
    config = resolve_corpus_config(args)
    assert config.inputs == ["a/", "b.warc.gz"] and config.text_column == "content"
    assert (config.dedup.bands, config.dedup.rows_per_band, config.output) == (32, 4, "o")
    seed_default = resolve_seed_config(parser.parse_args(["ingest", "seed"]))
    assert seed_default.inputs == [] and seed_default.source == "seed"
    seed_args = parser.parse_args(
        ["ingest", "seed", "--input", "x.parquet", "--format", "oasst1", "--top-n", "10"]
    )
    seed_config = resolve_seed_config(seed_args)
    assert (seed_config.format, seed_config.oasst.top_n, seed_config.source) == ("oasst1", 10, None)


def test_vectorised_bucket_resolution():
    import pyarrow as pa

    keys = pa.table(
        {
            "key": [9, 9, 9, 4, 4, 1],
            "uid": ["u3", "u1", "u2", "u2", "u4", "u5"],
            "id": ["c", "a", "b", "b", "d", "e"],
            "exact": [False, False, False, True, True, False],
        }
    )
    losses = dedup.losers_in_bucket(keys).to_pylist()
    assert sorted((r["id"], r["survivor_id"], r["reason"]) for r in losses) == [
        ("b", "a", "near_duplicate"),
        ("c", "a", "near_duplicate"),
        ("d", "b", "exact_duplicate"),
    ]
    rows = [
        {"kind": "segment", "uid": u, "id": i, "survivor_id": None, "reason": ""}
        for u, i in [("u1", "a"), ("u2", "b"), ("u3", "c"), ("u4", "d"), ("u5", "e")]
    ] + [{"kind": "loss", **r} for r in losses]
    resolved = dedup.resolve_bucket(pa.Table.from_pylist(rows)).to_pylist()
    # "b" survives key 4 but loses key 9 to "a": removed (the documented non-transitive rule).
    assert sorted(r["id"] for r in resolved if r["kind"] == "segment") == ["a", "e"]
    assert sorted((r["id"], r["reason"]) for r in resolved if r["kind"] == "duplicate") == [
        ("b", "near_duplicate"),
        ("c", "near_duplicate"),
        ("d", "exact_duplicate"),
    ]
