"""Small corpus and seed files for the ingest tests (and the benchmark's generator)."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

WORDS = [
    "time",
    "people",
    "year",
    "way",
    "day",
    "thing",
    "man",
    "world",
    "life",
    "hand",
    "part",
    "child",
    "eye",
    "woman",
    "place",
    "work",
    "week",
    "case",
    "point",
    "government",
    "company",
    "number",
    "group",
    "problem",
    "fact",
    "water",
    "room",
    "mother",
    "area",
    "money",
    "story",
    "month",
    "lot",
    "right",
    "study",
    "book",
    "job",
    "word",
    "business",
    "issue",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "father",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "president",
    "team",
    "minute",
    "idea",
    "kid",
    "body",
    "information",
    "back",
    "parent",
    "face",
    "others",
    "level",
    "office",
    "door",
    "health",
    "person",
    "art",
    "war",
    "history",
    "party",
    "result",
    "change",
    "morning",
    "reason",
    "research",
    "girl",
    "guy",
    "moment",
    "air",
    "teacher",
    "force",
    "education",
    "garden",
    "river",
    "market",
    "kitchen",
    "village",
    "library",
    "museum",
    "journey",
    "weather",
    "season",
    "winter",
    "summer",
    "mountain",
    "forest",
    "island",
    "bridge",
    "station",
    "engine",
    "machine",
    "garden",
    "window",
]
VERBS = [
    "make",
    "take",
    "see",
    "know",
    "get",
    "give",
    "find",
    "think",
    "tell",
    "become",
    "show",
    "leave",
    "feel",
    "bring",
    "begin",
    "keep",
    "hold",
    "write",
    "provide",
    "stand",
    "lose",
    "pay",
    "meet",
    "include",
    "continue",
    "learn",
    "lead",
    "understand",
    "watch",
    "follow",
    "create",
    "speak",
    "read",
    "spend",
    "grow",
    "open",
    "walk",
    "offer",
    "remember",
    "consider",
    "appear",
    "buy",
    "serve",
    "build",
    "explain",
    "describe",
    "prepare",
    "improve",
    "protect",
    "measure",
    "collect",
    "compare",
    "repair",
    "discover",
]
ADJECTIVES = [
    "good",
    "new",
    "first",
    "last",
    "long",
    "great",
    "little",
    "own",
    "other",
    "old",
    "right",
    "big",
    "high",
    "different",
    "small",
    "large",
    "next",
    "early",
    "young",
    "important",
    "few",
    "public",
    "bad",
    "same",
    "able",
    "local",
    "sure",
    "free",
    "better",
    "true",
    "whole",
    "clear",
    "recent",
    "certain",
    "personal",
    "open",
    "red",
    "difficult",
    "available",
    "likely",
    "short",
    "single",
    "medical",
    "careful",
    "quiet",
    "bright",
    "simple",
    "useful",
    "ancient",
    "modern",
    "gentle",
    "heavy",
    "narrow",
]


def sentence(rng: random.Random) -> str:
    """A plain English sentence of varied words (passes the language and repetition filters)."""
    parts = [
        "The",
        rng.choice(ADJECTIVES),
        rng.choice(WORDS),
        rng.choice(["will", "can", "should", "often", "usually", "may"]),
        rng.choice(VERBS),
        rng.choice(["a", "the", "every", "each", "our"]),
        rng.choice(ADJECTIVES),
        rng.choice(WORDS),
        rng.choice(["before", "after", "during", "near", "without", "beyond", "within"]),
        "the",
        rng.choice(WORDS),
        rng.choice(["today", "again", "together", "quickly", "slowly", "at night", "in spring"]),
    ]
    return " ".join(parts) + "."


def paragraph(rng: random.Random, chars: int = 900) -> str:
    out: list[str] = []
    while sum(len(s) + 1 for s in out) < chars:
        out.append(sentence(rng))
    return " ".join(out)


def html_page(rng: random.Random, sections: int = 3, title: str = "Page") -> str:
    """A realistic page: navigation, scripts, a footer, and headed sections of content."""
    body = [
        "<header class='site-header'><a href='/'>Home</a> <a href='/about'>About</a></header>",
        "<nav><ul><li><a href='/a'>Archive</a></li><li><a href='/b'>Blog</a></li></ul></nav>",
        "<script>window.track = function () { return 42; };</script>",
        f"<h1>{title}</h1><p>{paragraph(rng, 700)}</p>",
    ]
    for i in range(sections - 1):
        body.append(f"<h2>How to handle part {i + 1} of the {rng.choice(WORDS)}</h2>")
        body.append(f"<p>{paragraph(rng, 450)}</p><p>{paragraph(rng, 400)}</p>")
    body.append("<div class='site-footer'>Copyright 2024. All rights reserved.</div>")
    body.append("<footer><a href='/privacy'>Privacy</a></footer>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>t</title>"
        "<style>body { color: red; }</style></head><body>" + "\n".join(body) + "</body></html>"
    )


def warc_bytes(pages: list[tuple[str, str]], *, gzip_records: bool = True) -> bytes:
    """A WARC (one gzip member per record) with a request and a response record per page."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=gzip_records)
    for uri, html in pages:
        request = writer.create_warc_record(
            uri, "request", payload=io.BytesIO(b"GET / HTTP/1.1\r\n\r\n")
        )
        writer.write_record(request)
        headers = StatusAndHeaders(
            "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
        )
        record = writer.create_warc_record(
            uri, "response", payload=io.BytesIO(html.encode()), http_headers=headers
        )
        writer.write_record(record)
    return buffer.getvalue()


def write_corpus(root: Path, rng: random.Random | None = None) -> dict[str, Path]:
    """Every reader's format, every bad-input kind, and duplicates spread across files.

    Returns the paths by role, so tests can assert on each one.
    """
    rng = rng or random.Random(7)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    # Good inputs, one per reader.
    shared = html_page(random.Random(99), sections=3, title="A shared guide to gardens")
    paths["html"] = root / "pages" / "guide.html"
    paths["html"].parent.mkdir()
    paths["html"].write_text(html_page(rng, 3, "Tending the river garden"))
    # The same page in two more files (exact duplicates across files and blocks) and a
    # near duplicate with a few words changed.
    paths["dup_a"] = root / "pages" / "copy_a.html"
    paths["dup_a"].write_text(shared)
    paths["dup_b"] = root / "zz_mirror" / "copy_b.htm"
    paths["dup_b"].parent.mkdir()
    paths["dup_b"].write_text(shared)
    near = shared.replace("The ", "A ", 3)
    paths["near"] = root / "zz_mirror" / "near.html"
    paths["near"].write_text(near)

    paths["markdown"] = root / "notes.md"
    paths["markdown"].write_text(
        "# Notes on the museum\n\n" + paragraph(rng, 800) + "\n\n## Opening the library\n\n"
        + paragraph(rng, 900) + "\n\nSetting up the station\n----------------------\n\n"
        + paragraph(rng, 700) + "\n"
    )  # fmt: skip
    paths["text"] = root / "plain.txt"
    paths["text"].write_text(paragraph(rng, 1200))

    paths["warc"] = root / "crawl" / "part-000.warc.gz"
    paths["warc"].parent.mkdir()
    paths["warc"].write_bytes(
        warc_bytes(
            [(f"https://example.org/{i}", html_page(rng, 2, f"Station {i}")) for i in range(2)]
        )
    )

    paths["jsonl"] = root / "rows.jsonl"
    with paths["jsonl"].open("w") as f:
        f.write(
            json.dumps({"content": paragraph(rng, 1000), "url": "https://web.example/one"}) + "\n"
        )
        f.write("\n")  # blank lines are not records
        f.write('{"content": "broken json\n')  # malformed JSON line
        f.write(json.dumps({"title": "no text column here"}) + "\n")  # missing field
        f.write(json.dumps({"content": "x" * 300_000}) + "\n")  # one enormous line
        f.write(json.dumps({"content": paragraph(rng, 1100)}) + "\n")

    import pyarrow as pa
    import pyarrow.parquet as pq

    paths["parquet"] = root / "refinedweb.parquet"
    pq.write_table(
        pa.table(
            {
                "content": [paragraph(rng, 1000), paragraph(rng, 1500), shared_text_row(shared)],
                "url": ["https://rw.example/a", "https://rw.example/b", "https://rw.example/c"],
            }
        ),
        paths["parquet"],
    )

    # Bad inputs, one per kind.
    paths["empty"] = root / "empty.html"
    paths["empty"].write_bytes(b"")
    paths["binary"] = root / "image.png"
    paths["binary"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    paths["undecodable"] = root / "latin.txt"
    paths["undecodable"].write_bytes(bytes(rng.randrange(0x80, 0x100) for _ in range(4000)))
    paths["no_headers"] = root / "flat.html"
    paths["no_headers"].write_text(f"<html><body><p>{paragraph(rng, 900)}</p></body></html>")
    paths["truncated_gzip"] = root / "cut.jsonl.gz"
    full = gzip.compress(
        "".join(json.dumps({"content": paragraph(rng, 900)}) + "\n" for _ in range(6)).encode()
    )
    paths["truncated_gzip"].write_bytes(full[: len(full) * 2 // 3])
    paths["truncated_warc"] = root / "crawl" / "part-001.warc.gz"
    whole = warc_bytes(
        [(f"https://cut.example/{i}", html_page(rng, 2, f"Bridge {i}")) for i in range(3)]
    )
    paths["truncated_warc"].write_bytes(whole[: len(whole) - 700])
    return paths


def shared_text_row(html: str) -> str:
    """Visible text of a page, as a web-corpus row would hold it (a cross-format duplicate)."""
    from selectolax.lexbor import LexborHTMLParser

    return LexborHTMLParser(html).body.text(separator="\n")


def write_seed_inputs(root: Path) -> dict[str, Path]:
    """One file per seed format, plus bad records."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    long_q = "Could you please explain how a river carries sand down to the sea over many years?"
    long_a = (
        "A river picks up sand where the water runs fast and drops it where the water slows down."
    )

    def labels(quality: float) -> dict:
        return {"name": ["spam", "quality"], "value": [0.0, quality], "count": [3, 3]}

    def message(mid, parent, tree, role, text, lang="en", rank=None, quality=None):
        return {
            "message_id": mid,
            "parent_id": parent,
            "message_tree_id": tree,
            "role": role,
            "text": text,
            "lang": lang,
            "rank": rank,
            "deleted": False,
            "review_result": True,
            "labels": labels(quality) if quality is not None else None,
        }

    rows = []
    for t, quality in enumerate([0.9, 0.5, 0.7]):
        tree = f"tree{t}"
        rows.append(message(tree, None, tree, "prompter", f"{long_q} Case {t}."))
        rows.append(
            message(
                f"{tree}-r0",
                tree,
                tree,
                "assistant",
                f"{long_a} Reply {t}.",
                rank=0,
                quality=quality,
            )
        )
        rows.append(
            message(
                f"{tree}-r1",
                tree,
                tree,
                "assistant",
                "A worse reply that ranks lower than the first one.",
                rank=1,
                quality=0.1,
            )
        )
        rows.append(
            message(
                f"{tree}-f",
                f"{tree}-r0",
                tree,
                "prompter",
                "And what about a follow-up question here?",
            )
        )
    rows.append(
        message(
            "tree3",
            None,
            "tree3",
            "prompter",
            "Wie funktioniert ein Fluss eigentlich im Detail genau?",
            lang="de",
        )
    )
    rows.append(
        message(
            "tree3-r0",
            "tree3",
            "tree3",
            "assistant",
            "Ein Fluss transportiert Sand und Steine ins Meer hinaus.",
            lang="de",
            rank=0,
            quality=0.9,
        )
    )
    rows.append(message("tree4", None, "tree4", "prompter", "Short question?"))
    rows.append(
        message(
            "tree4-r0",
            "tree4",
            "tree4",
            "assistant",
            "Yes, short answer here indeed ok fine.",
            rank=0,
            quality=0.8,
        )
    )
    paths["oasst_parquet"] = root / "oasst1" / "train.parquet"
    paths["oasst_parquet"].parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), paths["oasst_parquet"])

    paths["oasst_trees"] = root / "oasst_trees.jsonl"
    tree = {
        "message_tree_id": "tree9",
        "tree_state": "ready_for_export",
        "prompt": {
            "message_id": "tree9",
            "role": "prompter",
            "lang": "en",
            "text": "What are three good reasons to keep a garden journal every season?",
            "replies": [
                {"message_id": "r9", "role": "assistant", "rank": 0, "text": "It records what you planted, shows what worked, and helps you plan the next season well.", "labels": {"quality": {"value": 0.95, "count": 3}}},
            ],
        },
    }  # fmt: skip
    paths["oasst_trees"].write_text(json.dumps(tree) + "\n")

    paths["alpaca"] = root / "alpaca_data.json"
    paths["alpaca"].write_text(
        json.dumps(
            [
                {"instruction": "Translate the sentence into French.", "input": "The cat sleeps.", "output": "Le chat dort."},
                {"instruction": "Name a primary colour.", "input": "", "output": "Blue."},
                {"instruction": "", "input": "", "output": "no instruction"},
            ]
        )
    )  # fmt: skip
    paths["sharegpt"] = root / "sharegpt.jsonl"
    paths["sharegpt"].write_text(
        json.dumps({"conversations": [{"from": "human", "value": "Hi, what is 2+2?"}, {"from": "gpt", "value": "4."}, {"from": "human", "value": "And 3+3?"}, {"from": "gpt", "value": "6."}]}) + "\n"
        + json.dumps({"conversations": [{"from": "gpt", "value": "I speak first."}]}) + "\n"
    )  # fmt: skip
    paths["messages"] = root / "chat.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Italy?"}, {"role": "assistant", "content": "Rome."}]}]
        ),
        paths["messages"],
    )  # fmt: skip
    paths["pairs"] = root / "pairs.jsonl"
    paths["pairs"].write_text(
        json.dumps({"instruction": "Say hello.", "response": "Hello!"}) + "\n"
        + "{not json}\n"
        + json.dumps(["a", "list"]) + "\n"
    )  # fmt: skip
    return paths
