"""Typed configs of ``selfalign ingest seed`` and ``selfalign ingest corpus``.

Every threshold is a field; the defaults are the paper's (Li et al. 2023, section 3 and
appendix) where it gives one, and documented choices of ours where it does not.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selfalign.core.config import Placement, Strict

CorpusFormat = Literal["auto", "html", "warc", "markdown", "text", "jsonl", "parquet"]
SeedFormat = Literal["auto", "oasst1", "alpaca", "sharegpt", "messages", "pairs"]

# Headers that announce page furniture rather than content (the paper's examples plus
# the usual suspects); matched as whole words, case-insensitively.
DEFAULT_NAVIGATION_WORDS = [
    "advertisement",
    "advertisements",
    "sponsored",
    "forum",
    "forums",
    "quick link",
    "quick links",
    "newsletter",
    "subscribe",
    "sign up",
    "log in",
    "login",
    "related posts",
    "related articles",
    "share this",
    "follow us",
    "comments",
    "leave a reply",
    "leave a comment",
    "navigation",
    "main menu",
    "menu",
    "footer",
    "sidebar",
    "categories",
    "tags",
    "archives",
    "recent posts",
    "popular posts",
    "cookie",
    "cookies",
    "privacy policy",
    "terms of use",
    "copyright",
    "contact us",
    "table of contents",
    "contents",
]


class ReadSettings(Strict):
    """Limits that keep one bad input from taking a worker down."""

    max_document_bytes: int = Field(
        8 * 2**20,
        ge=1024,
        description="A document (file, record, line) larger than this is rejected.",
    )
    max_invalid_utf8_fraction: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Undecodable bytes tolerated (replaced by U+FFFD) before a document is rejected.",
    )
    binary_sniff_bytes: int = Field(
        8192,
        ge=64,
        description="Bytes inspected for NUL/control characters to detect binary files.",
    )
    max_control_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of control characters above which a file is binary."
    )
    parquet_batch_rows: int = Field(1024, ge=1, description="Rows per Parquet read batch.")


class SegmentSettings(Strict):
    """How a document is cut into segments (one per HTML header / Markdown heading)."""

    headerless: Literal["reject", "whole"] = Field(
        "reject",
        description="HTML/Markdown with no header at all: 'reject' it (reason no_headers) or keep "
        "the whole text as one segment without header (null).",
    )
    remove_tags: list[str] = Field(
        default_factory=lambda: [
            "script",
            "style",
            "noscript",
            "template",
            "iframe",
            "svg",
            "canvas",
            "nav",
            "footer",
            "header",
            "aside",
            "form",
            "button",
            "select",
            "object",
            "embed",
        ],
        description="HTML elements removed with their content before segmentation.",
    )
    remove_roles: list[str] = Field(
        default_factory=lambda: ["navigation", "banner", "contentinfo", "search", "complementary"],
        description="Elements with these ARIA roles are removed (nav/footer written as <div>).",
    )
    remove_class_tokens: list[str] = Field(
        default_factory=lambda: [
            "nav",
            "navbar",
            "navigation",
            "menu",
            "footer",
            "breadcrumb",
            "breadcrumbs",
            "sidebar",
            "cookie-banner",
            "advert",
            "advertisement",
            "share",
            "social",
        ],
        description="Elements whose class or id contains one of these tokens (split on -, _ "
        "and spaces; the whole token must match) are removed.",
    )


class LengthFilter(Strict):
    enabled: bool = True
    min_chars: int = Field(600, ge=0, description="Paper: segments of 600-3,000 characters.")
    max_chars: int = Field(3000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LengthFilter:
        if self.max_chars < self.min_chars:
            raise ValueError(f"max_chars ({self.max_chars}) < min_chars ({self.min_chars})")
        return self


class HeaderFilter(Strict):
    enabled: bool = True
    drop_empty: bool = Field(
        True, description="Drop segments whose header is empty (text before the first header)."
    )
    drop_all_caps: bool = Field(
        True, description="Drop segments whose header is written in capitals only."
    )
    min_caps_letters: int = Field(
        4,
        ge=1,
        description="All-caps rule applies from this many letters on (so 'FAQ', 'API' pass).",
    )
    navigation_words: list[str] = Field(default_factory=lambda: list(DEFAULT_NAVIGATION_WORDS))
    max_header_chars: int = Field(
        200, ge=1, description="Longer 'headers' are layout abuse: dropped."
    )


class RepetitionFilter(Strict):
    enabled: bool = True
    ngram: int = Field(3, ge=1, description="Word n-grams compared between sentences.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Two sentences whose n-gram Jaccard reaches this are repeats."
    )
    min_sentence_words: int = Field(
        4, ge=1, description="Shorter sentences are ignored (list bullets, 'Yes.', 'Thanks!')."
    )
    max_repeated_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Drop when more than this share of sentences repeat another one (0: any "
        "repeat). The paper gives no share; 0.2 is ours. Code blocks are not sentences.",
    )


class LanguageFilter(Strict):
    enabled: bool = True
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="ISO 639-1 codes kept."
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="py3langid normalised probability needed to accept a language."
    )


class FilterSettings(Strict):
    """Applied in this order; a segment is counted under the first filter it fails."""

    length: LengthFilter = LengthFilter()
    header: HeaderFilter = HeaderFilter()
    repetition: RepetitionFilter = RepetitionFilter()
    language: LanguageFilter = LanguageFilter()


class DedupSettings(Strict):
    """Exact and near-duplicate removal across the whole corpus (MinHash + LSH)."""

    exact: bool = Field(True, description="Drop segments whose normalised text equals another's.")
    near: bool = Field(True, description="Drop segments that share an LSH band with another.")
    num_perm: int = Field(128, ge=8, description="MinHash permutations (signature length).")
    bands: int = Field(
        16,
        ge=1,
        description="LSH bands; bands x rows_per_band must equal num_perm. With 16 x 8 the "
        "S-curve's midpoint, (1/bands)^(1/rows), is a Jaccard of about 0.71.",
    )
    rows_per_band: int = Field(8, ge=1)
    shingle_words: int = Field(5, ge=1, description="Word n-gram length of MinHash shingles.")
    seed: int = Field(
        1, description="Seed of the MinHash permutations (fixed: ids must be stable)."
    )
    num_partitions: int | None = Field(
        None,
        ge=1,
        description="Hash partitions of the band-key shuffles and the anti-join (default: the "
        "cluster's CPU count, at most 200).",
    )

    buckets: int | None = Field(
        None,
        ge=1,
        description="Coarse key buckets, each resolved in one vectorised call (default: about "
        "one per million key rows, at least num_partitions).",
    )

    @model_validator(mode="after")
    def _check(self) -> DedupSettings:
        if self.bands * self.rows_per_band != self.num_perm:
            raise ValueError(
                f"bands x rows_per_band ({self.bands} x {self.rows_per_band}) must equal "
                f"num_perm ({self.num_perm})"
            )
        return self


class CorpusIngestConfig(Placement):
    """``selfalign ingest corpus``: unlabelled documents -> clean, deduplicated segments."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Files, directories or globs, local or object store. Empty: the embedded "
        "corpus (README pages of the installed Python packages).",
    )
    format: CorpusFormat = Field(
        "auto", description="'auto': by file suffix (and content sniffing)."
    )
    text_column: str = Field(
        "text", description="JSONL/Parquet text column (falcon-refinedweb: 'content')."
    )
    url_column: str | None = Field(
        "url", description="JSONL/Parquet column used as source when present."
    )
    output: str = Field(
        "runs/ingest/corpus", description="Output directory (local or object store)."
    )
    limit_files: int | None = Field(None, ge=1, description="Read only the first N input files.")
    keep_staging: bool = Field(False, description="Keep the intermediate staging datasets.")
    read: ReadSettings = ReadSettings()
    segment: SegmentSettings = SegmentSettings()
    filters: FilterSettings = FilterSettings()
    dedup: DedupSettings = DedupSettings()

    resume_ignore: ClassVar[frozenset[str]] = Placement.resume_ignore | {"output"}


class OasstSelection(Strict):
    """The paper's selection of seed pairs from oasst1 message trees."""

    lang: str = Field("en", description="Language of the root prompt.")
    min_words: int = Field(
        5, ge=0, description="Instruction and response each need MORE than this many words."
    )
    top_n: int | None = Field(3200, ge=1, description="Keep the N best pairs by reply quality.")
    quality_label: str = Field("quality", description="oasst1 label ranked for top-N.")
    skip_deleted: bool = Field(True, description="Ignore messages marked deleted.")
    skip_failed_review: bool = Field(
        True, description="Ignore messages whose review_result is false."
    )


class SeedIngestConfig(Placement):
    """``selfalign ingest seed``: human (instruction, response) pairs in one schema."""

    inputs: list[str] = Field(
        default_factory=list,
        description="Files, directories or globs. Empty: the embedded seed set.",
    )
    format: SeedFormat = Field("auto", description="'auto': detected per record from its fields.")
    source: str | None = Field(
        None, description="Value of the source column (default: the format)."
    )
    output: str = Field("runs/ingest/seed", description="Output directory (local or object store).")
    min_words: int = Field(
        0, ge=0, description="Non-oasst formats: instruction and response need more than N words."
    )
    oasst: OasstSelection = OasstSelection()
    read: ReadSettings = ReadSettings()

    resume_ignore: ClassVar[frozenset[str]] = Placement.resume_ignore | {"output"}
