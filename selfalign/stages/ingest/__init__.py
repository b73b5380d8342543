"""Corpus and seed ingestion: the pure stage logic (no ray/vllm/torch imports).

* ``readers``: bytes of one file (or one embedded package README) -> records or rejects;
* ``segment``: one document -> self-contained segments, each the text under one header;
* ``filters``: the paper's segment filters (length, header rules, repetition, language);
* ``dedup``: exact hashes, MinHash signatures, LSH band keys and survivor choice;
* ``corpus``: the per-source chain read -> segment -> filter -> dedup keys, and the stats ledger;
* ``seed``: human seed pairs from oasst1, Alpaca, ShareGPT, chat messages and plain pairs.

``selfalign.stages.ingest.pipeline`` wires these into Ray Data pipelines.
"""
