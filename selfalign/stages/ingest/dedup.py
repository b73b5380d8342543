"""Exact and near-duplicate keys (MinHash + LSH bands) and the choice of survivors.

Every segment gets one *exact key* (a 64-bit hash of its normalised text) and ``bands`` *band
keys* (a 64-bit hash of each band of its MinHash signature). The runtime explodes these keys
into (key, segment) rows, groups them with a distributed shuffle, and in every group of two or
more keeps the segment with the smallest ``(id, uid)``: the choice depends only on the
segments, never on block or file order, so reruns drop the same ones.

Approximation (documented, deliberate): a segment is removed when it shares *any* key with a
segment of smaller id, whether or not that one survives itself. Duplicate clusters are not
closed transitively (A~B and B~C with A !~ C still removes both B and C when A < B < C,
because each has a smaller neighbour), and band collisions are not re-checked against the
true Jaccard similarity, so a small share of false positives is accepted (with 16 bands of 8
rows, pairs under Jaccard 0.5 collide with probability < 6%). In exchange dedup needs no
driver-side state and streams at any corpus size.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import lru_cache

import mmh3
import numpy as np

from selfalign.stages.ingest.config import DedupSettings

_WORD = re.compile(r"\w+", re.UNICODE)
# A prime just above 2^32: (a*x + b) mod P with a, b, x < 2^32 is a universal hash family
# whose intermediate a*x + b fits in an unsigned 64-bit integer without overflow.
_PRIME = np.uint64(4294967311)
_MASK32 = np.uint64(0xFFFFFFFF)


def normalise(text: str) -> str:
    """Case-folded, NFKC, whitespace-collapsed text: what counts as "the same text"."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def exact_key(text: str) -> int:
    """Signed 64-bit hash of the normalised text.

    >>> exact_key("Hello  World") == exact_key("hello world")
    True
    """
    return _hash64(b"exact\0" + normalise(text).encode("utf-8", "surrogatepass"))


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64)
    return a, b


def shingles(text: str, size: int) -> list[str]:
    """Word n-grams of the normalised text (the whole text when it is shorter than n words)."""
    words = _WORD.findall(normalise(text))
    if len(words) <= size:
        return [" ".join(words)]
    return [" ".join(words[i : i + size]) for i in range(len(words) - size + 1)]


def minhash(text: str, settings: DedupSettings) -> np.ndarray:
    """MinHash signature (``num_perm`` uint32 values) over word shingles."""
    values = np.fromiter(
        (mmh3.hash(s, 0, signed=False) for s in set(shingles(text, settings.shingle_words))),
        dtype=np.uint64,
    )
    a, b = _permutations(settings.num_perm, settings.seed)
    hashed = (np.outer(a, values) + b[:, None]) % _PRIME & _MASK32
    return hashed.min(axis=1).astype(np.uint32)


def band_keys(signature: np.ndarray, settings: DedupSettings) -> list[int]:
    """One signed 64-bit key per band; the band index is hashed in so bands never mix."""
    rows = settings.rows_per_band
    return [
        _hash64(band.to_bytes(2, "little") + signature[band * rows : (band + 1) * rows].tobytes())
        for band in range(settings.bands)
    ]


def jaccard(a: str, b: str, size: int) -> float:
    """True shingle Jaccard similarity (for tests and audits, not used in the pipeline)."""
    sa, sb = set(shingles(a, size)), set(shingles(b, size))
    return len(sa & sb) / len(sa | sb) if sa or sb else 1.0


def group_losers(ids: list[str], uids: list[str], exact: bool) -> list[tuple[str, str, str, str]]:
    """For one key group: ``(uid, id, survivor_id, reason)`` of every member but the survivor.

    >>> group_losers(["b", "a", "c"], ["u1", "u2", "u3"], exact=False)
    [('u1', 'b', 'a', 'near_duplicate'), ('u3', 'c', 'a', 'near_duplicate')]
    """
    if len(ids) < 2:
        return []
    members = sorted(zip(ids, uids, strict=True))
    survivor_id, survivor_uid = members[0]
    reason = "exact_duplicate" if exact else "near_duplicate"
    return [(uid, id_, survivor_id, reason) for id_, uid in members[1:] if uid != survivor_uid]


def pick_one_loss(reasons: list[str], survivors: list[str]) -> int:
    """A segment may lose in several groups: report the exact match first, then the smallest
    survivor, so each removed segment is counted once and the same way on every run.

    >>> pick_one_loss(["near_duplicate", "exact_duplicate"], ["a", "b"])
    1
    """
    order = sorted(
        range(len(reasons)), key=lambda i: (reasons[i] != "exact_duplicate", survivors[i])
    )
    return order[0]


# --------------------------------------------------------------------------- vectorised groups
# The runtime shuffles (key, segment) rows by a coarse *bucket* of the key, so that one call
# handles many thousand keys at once: a Python call per key would cost more than the hashing.

LOSS_COLUMNS = ("uid", "id", "survivor_id", "reason")


def bucket_of(values: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket (0..buckets-1) of signed 64-bit keys; equal keys share a bucket."""
    return (values.view(np.uint64) % np.uint64(buckets)).astype(np.int64)


def uid_bucket(uids: list[str], buckets: int) -> np.ndarray:
    """Bucket of hex uids (their first 15 hex digits are uniform)."""
    return np.fromiter((int(u[:15], 16) % buckets for u in uids), dtype=np.int64, count=len(uids))


def losers_in_bucket(table):
    """All keys of one bucket at once: ``(uid, id, survivor_id, reason)`` of every row that is
    not the smallest ``(id, uid)`` of its key. ``table`` has key, uid, id, exact.

    >>> import pyarrow as pa
    >>> t = pa.table({"key": [5, 5, 7], "uid": ["u2", "u1", "u3"], "id": ["b", "a", "c"],
    ...               "exact": [True, True, False]})
    >>> losers_in_bucket(t).to_pylist()
    [{'uid': 'u2', 'id': 'b', 'survivor_id': 'a', 'reason': 'exact_duplicate'}]
    """
    import pyarrow as pa

    ordered = table.sort_by([("key", "ascending"), ("id", "ascending"), ("uid", "ascending")])
    keys = ordered["key"].to_numpy()
    if len(keys) == 0:
        return pa.table({c: pa.array([], pa.string()) for c in LOSS_COLUMNS})
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    # Index of the first (surviving) row of each row's key group.
    head = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
    losing = np.flatnonzero(~first)
    ids = ordered["id"]
    exact = ordered["exact"].to_numpy(zero_copy_only=False)[losing]
    return pa.table(
        {
            "uid": ordered["uid"].take(losing),
            "id": ids.take(losing),
            "survivor_id": ids.take(head[losing]),
            "reason": pa.array(np.where(exact, "exact_duplicate", "near_duplicate"), pa.string()),
        }
    )


def resolve_bucket(table):
    """Segments and losses of one uid bucket: the segments without a loss, and one
    ``duplicate`` row per segment with losses (exact first, then the smallest survivor).

    ``table`` has ``kind`` (segment | loss), uid, survivor_id, reason, and segment columns.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    is_loss = pc.equal(table["kind"], "loss")
    losses = table.filter(is_loss)
    segments = table.filter(pc.invert(is_loss))
    kept = segments.filter(pc.invert(pc.is_in(segments["uid"], value_set=losses["uid"])))
    if losses.num_rows == 0:
        return kept
    rank = pc.not_equal(losses["reason"], "exact_duplicate")  # exact (False) sorts first
    ordered = losses.append_column("_rank", rank).sort_by(
        [("uid", "ascending"), ("_rank", "ascending"), ("survivor_id", "ascending")]
    )
    uids = ordered["uid"].to_numpy(zero_copy_only=False)
    first = np.ones(len(uids), dtype=bool)
    first[1:] = uids[1:] != uids[:-1]
    one = ordered.filter(pa.array(first)).drop_columns(["_rank"])
    one = one.set_column(
        one.schema.get_field_index("kind"), "kind", pa.array(["duplicate"] * one.num_rows)
    )
    return pa.concat_tables([kept, one.cast(kept.schema)])
