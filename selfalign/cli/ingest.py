"""``selfalign ingest``: seed pairs and web documents into clean Parquet datasets.

Examples::

    selfalign ingest corpus                                  # the embedded corpus (package READMEs)
    selfalign ingest corpus --input crawl/*.warc.gz --input pages/ --output runs/corpus
    selfalign ingest corpus --input s3://bucket/refinedweb/ --text-column content \\
        filters.length.min_chars=400 dedup.bands=32 dedup.rows_per_band=4
    selfalign ingest seed                                    # the embedded seed set
    selfalign ingest seed --input oasst1/ --format oasst1 oasst.top_n=3200
    ray job submit --working-dir . -- python jobs/ingest.py corpus --input s3://bucket/warc/ --output s3://bucket/corpus

Outputs (under --output): ``segments/`` (or ``pairs/``), ``rejects/``, ``drops/``,
``duplicates/`` (corpus), ``ingest-stats.json`` and ``_selfalign_config.yaml``.
"""

from __future__ import annotations

import argparse
import json

from selfalign.cli.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config, deep_merge, parse_overrides
from selfalign.stages.ingest.config import CorpusIngestConfig, SeedIngestConfig


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign ingest", description=__doc__)
    sub = parser.add_subparsers(dest="ingest_command", required=True, metavar="{seed,corpus}")

    corpus = sub.add_parser("corpus", help="web documents -> clean, deduplicated segments")
    corpus.add_argument(
        "--input",
        action="append",
        help="file, directory or glob (local or URI); repeatable. Default: the embedded corpus",
    )
    corpus.add_argument("--output", help="output directory (default: runs/ingest/corpus)")
    corpus.add_argument(
        "--format",
        choices=["auto", "html", "warc", "markdown", "text", "jsonl", "parquet"],
        help="reader (default: by file suffix)",
    )
    corpus.add_argument(
        "--text-column", help="JSONL/Parquet text column (default: text; refinedweb: content)"
    )
    corpus.add_argument("--limit-files", type=int, help="read only the first N input files")
    _add_overwrite(corpus)
    add_config_arguments(corpus)

    seed = sub.add_parser("seed", help="human seed pairs -> one schema")
    seed.add_argument(
        "--input",
        action="append",
        help="file, directory or glob; repeatable. Default: the embedded seed set",
    )
    seed.add_argument("--output", help="output directory (default: runs/ingest/seed)")
    seed.add_argument(
        "--format",
        choices=["auto", "oasst1", "alpaca", "sharegpt", "messages", "pairs"],
        help="record format (default: detected per record)",
    )
    seed.add_argument("--source", help="value of the source column (default: the format name)")
    seed.add_argument(
        "--top-n", type=int, help="oasst1: keep the N best pairs by quality (default 3200)"
    )
    _add_overwrite(seed)
    add_config_arguments(seed)
    return parser


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output that holds another ingestion (default: refuse; same settings: skip)",
    )


def _overrides(args: argparse.Namespace, mapping: dict[str, str]) -> dict:
    tree = parse_overrides(flag_overrides(args, mapping))
    if args.input:
        tree = deep_merge(tree, {"inputs": list(args.input)})
    return tree


def resolve_corpus_config(args: argparse.Namespace) -> CorpusIngestConfig:
    mapping = {
        "output": "output",
        "format": "format",
        "text_column": "text_column",
        "limit_files": "limit_files",
    }
    return build_config(CorpusIngestConfig, args.config, _overrides(args, mapping))


def resolve_seed_config(args: argparse.Namespace) -> SeedIngestConfig:
    mapping = {
        "output": "output",
        "format": "format",
        "source": "source",
        "top_n": "oasst.top_n",
    }
    config = build_config(SeedIngestConfig, args.config, _overrides(args, mapping))
    if not config.inputs and config.source is None:
        # The embedded set says source="seed" in its rows' own words: keep that name.
        config = config.model_copy(update={"source": "seed"})
    return config


def main(args: argparse.Namespace) -> int:
    from selfalign.stages.ingest.corpus import format_summary
    from selfalign.stages.ingest.stage import run_corpus, run_seed

    setup_logging()
    if args.ingest_command == "corpus":
        stats = run_corpus(resolve_corpus_config(args), overwrite=args.overwrite)
        print(format_summary(stats))
    else:
        stats = run_seed(resolve_seed_config(args), overwrite=args.overwrite)
    ok = stats["balance"]["ok"]
    print(json.dumps(stats, indent=2))
    return 0 if ok else 1
