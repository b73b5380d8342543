"""The paper's segment filters: length, header rules, repeated sentences, language.

Each filter returns ``""`` for a pass or a short reason name; :func:`check_segment` runs them
in the configured order and reports the first failure, so every dropped segment is counted
under exactly one filter and one reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from selfalign.stages.ingest.config import (
    FilterSettings,
    HeaderFilter,
    LanguageFilter,
    LengthFilter,
    RepetitionFilter,
)

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
NAVIGATION_MAX_WORDS = 6  # a longer header that mentions "comments" is about comments


@dataclass(frozen=True)
class Verdict:
    filter: str = ""  # "" when the segment passes every filter
    reason: str = ""
    detail: str = ""
    lang: str | None = None
    lang_score: float | None = None

    @property
    def passed(self) -> bool:
        return not self.filter


def length_reason(text: str, settings: LengthFilter) -> str:
    """
    >>> length_reason("x" * 10, LengthFilter(min_chars=5, max_chars=20))
    ''
    >>> length_reason("x" * 3, LengthFilter(min_chars=5, max_chars=20))
    'too_short'
    """
    if len(text) < settings.min_chars:
        return "too_short"
    if len(text) > settings.max_chars:
        return "too_long"
    return ""


@lru_cache(maxsize=64)
def _navigation_pattern(words: tuple[str, ...]) -> re.Pattern | None:
    phrases = [re.escape(_NON_WORD.sub(" ", w.lower()).strip()) for w in words if w.strip()]
    if not phrases:
        return None
    return re.compile(r"\b(?:" + "|".join(sorted(phrases, key=len, reverse=True)) + r")\b")


def header_reason(header: str | None, settings: HeaderFilter) -> str:
    """Reason to drop a segment for its header; header-less formats (None) always pass.

    >>> header_reason("Installing the package", HeaderFilter())
    ''
    >>> header_reason("", HeaderFilter())
    'empty_header'
    >>> header_reason("LATEST NEWS", HeaderFilter())
    'all_caps_header'
    >>> header_reason("Quick Links", HeaderFilter())
    'navigation_header'
    >>> header_reason("API", HeaderFilter())
    ''
    """
    if header is None:
        return ""
    stripped = header.strip()
    if not stripped:
        return "empty_header" if settings.drop_empty else ""
    if len(stripped) > settings.max_header_chars:
        return "long_header"
    if settings.drop_all_caps:
        cased = [c for c in stripped if c.isalpha() and (c.isupper() or c.islower())]
        if len(cased) >= settings.min_caps_letters and all(c.isupper() for c in cased):
            return "all_caps_header"
    pattern = _navigation_pattern(tuple(settings.navigation_words))
    normalised = _NON_WORD.sub(" ", stripped.lower()).strip()
    if pattern and len(normalised.split()) <= NAVIGATION_MAX_WORDS and pattern.search(normalised):
        return "navigation_header"
    return ""


_FENCED = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
_INDENTED = re.compile(r"^(?: {4}|\t).*$", re.M)


def prose(text: str) -> str:
    """Text without fenced or indented code blocks: code repeats lines by nature."""
    return _INDENTED.sub("", _FENCED.sub("", text))


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(prose(text)) if s and s.strip()]


def repeated_sentence_fraction(text: str, settings: RepetitionFilter) -> float:
    """Share of (long enough) sentences whose word n-grams overlap another's by >= threshold.

    Pairs are found through an inverted index of n-grams, so only sentences sharing at least
    one n-gram are compared (a 3,000-character segment has ~30-60 sentences).

    >>> s = RepetitionFilter(ngram=2, threshold=0.8, min_sentence_words=3)
    >>> repeated_sentence_fraction("Buy cheap shoes now. Buy cheap shoes now! Other words here.", s)
    0.6666666666666666
    >>> repeated_sentence_fraction("One two three four. Five six seven eight.", s)
    0.0
    """
    grams: list[set[tuple[str, ...]]] = []
    n = settings.ngram
    for sentence in split_sentences(text):
        words = _WORD.findall(sentence.lower())
        if len(words) < settings.min_sentence_words:
            continue
        if len(words) < n:
            grams.append({tuple(words)})
        else:
            grams.append({tuple(words[i : i + n]) for i in range(len(words) - n + 1)})
    if len(grams) < 2:
        return 0.0
    index: dict[tuple[str, ...], list[int]] = {}
    repeated = [False] * len(grams)
    for i, own in enumerate(grams):
        shared: dict[int, int] = {}
        for gram in own:
            for j in index.get(gram, ()):
                shared[j] = shared.get(j, 0) + 1
            index.setdefault(gram, []).append(i)
        for j, inter in shared.items():
            union = len(own) + len(grams[j]) - inter
            if union and inter / union >= settings.threshold:
                repeated[i] = repeated[j] = True
    return sum(repeated) / len(grams)


def repetition_reason(text: str, settings: RepetitionFilter) -> tuple[str, str]:
    fraction = repeated_sentence_fraction(text, settings)
    if fraction > settings.max_repeated_fraction:
        return "repeated_sentences", f"{fraction:.2f} of sentences repeat"
    return "", ""


_IDENTIFIER = None


def identify_language(text: str) -> tuple[str, float]:
    """``(ISO 639-1 code, probability)`` from py3langid, whose model ships in its wheel.

    The model (~70 MB in memory, 0.5 s to load) is loaded once per worker process.
    """
    global _IDENTIFIER
    if _IDENTIFIER is None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    lang, score = _IDENTIFIER.classify(text[:4000])
    return str(lang), float(score)


def language_verdict(text: str, settings: LanguageFilter) -> tuple[str, str, str, float]:
    """``(reason, detail, lang, score)``; reason "" when the language is accepted."""
    lang, score = identify_language(text)
    if lang not in settings.languages:
        return "other_language", f"{lang} ({score:.2f})", lang, score
    if score < settings.min_confidence:
        return "uncertain_language", f"{lang} ({score:.2f})", lang, score
    return "", "", lang, score


def check_segment(text: str, header: str | None, settings: FilterSettings) -> Verdict:
    """The first filter the segment fails, cheapest first; ``Verdict()`` when it passes all."""
    if settings.length.enabled:
        reason = length_reason(text, settings.length)
        if reason:
            return Verdict("length", reason, str(len(text)))
    if settings.header.enabled:
        reason = header_reason(header, settings.header)
        if reason:
            return Verdict("header", reason, (header or "")[:120])
    if settings.repetition.enabled:
        reason, detail = repetition_reason(text, settings.repetition)
        if reason:
            return Verdict("repetition", reason, detail)
    if settings.language.enabled:
        reason, detail, lang, score = language_verdict(text, settings.language)
        if reason:
            return Verdict("language", reason, detail, lang, score)
        return Verdict(lang=lang, lang_score=score)
    return Verdict()
