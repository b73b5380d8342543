"""Self-curation: the current model rates (instruction, response) pairs 1-5 (pure).

Two scoring modes:

* ``logprobs`` (default): the prompt ends with the assistant's reply already begun as
  ``Score:``; the engine returns the top-k next tokens, and the probabilities of "1".."5"
  (with or without a leading space) are renormalised into a distribution. The expected
  score makes fractional thresholds meaningful, and there is no text to misparse.
* ``generate``: the model writes brief reasoning, then ``Score: N``; ``parse_score`` takes
  the last standalone score in 1-5 and otherwise returns None (the raw text is kept).

The rubric comes first in the prompt and is identical for every row, so vLLM's prefix
caching computes it once. The conversation shape comes from the scorer's own training
chat format (``selfalign.formats.conversations.prompt_messages``): a model is scored
with the template and system prompt it was trained with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from selfalign.formats.conversations import ScorerFormat, prompt_messages
from selfalign.formats.prompts import render, template

Mode = Literal["logprobs", "generate"]
SCORES = (1, 2, 3, 4, 5)
SCORE_PREFIX = "Score:"
# "Score: 4", "score - 4", "**Score:** 4/5"; the digit must stand alone (not 10502).
_SCORE = re.compile(r"score\s*\**\s*[:=\-]\s*\**\s*([1-5])(?![\d.])(?:\s*/\s*5)?", re.IGNORECASE)


def curation_text(instruction: str, response: str, mode: Mode) -> str:
    """Rubric (shared prefix) + the pair + the mode's closing request."""
    suffix = "curate_logprobs_suffix" if mode == "logprobs" else "curate_generate_suffix"
    return (
        template("curate_rubric")
        + render("curate_pair", instruction=instruction, response=response)
        + template(suffix)
    )


def score_prefix_for(pieces: Sequence[str]) -> str:
    """The reply pre-fill after which the next token is the score digit itself.

    ``pieces`` is how the scorer's tokenizer splits ``"Score: 3"``, token by token. Some
    tokenizers (SmolLM2's, Llama-2's) make the space its own token: the pre-fill must
    then include it, or the model's next token is just a space. Others (Llama-3's) have
    " 3" as one token: the pre-fill stops at the colon.
    """
    if len(pieces) >= 2 and pieces[-1] == "3" and pieces[-2].endswith(" "):
        return SCORE_PREFIX + " "
    return SCORE_PREFIX


def request_messages(
    instruction: str,
    response: str,
    *,
    mode: Mode,
    scorer_format: ScorerFormat = "seed",
    score_prefix: str = SCORE_PREFIX,
) -> list[dict[str, str]]:
    """The scorer's conversation. ``scorer_format`` is the chat format the scoring model
    was trained in (``seed`` for M0 and for base instruct models, ``curated`` for M1+).
    The rating request carries the "seed" source (answer as an AI Assistant): the paper
    found that tag best at inference."""
    request = {"instruction": curation_text(instruction, response, mode), "source": "seed"}
    messages = prompt_messages(request, scorer_format)
    if mode == "logprobs":
        # The reply is pre-filled with "Score:"; the engine reads the next token.
        messages = [*messages, {"role": "assistant", "content": score_prefix}]
    return messages


def parse_score(text: str | None) -> int | None:
    """The last standalone ``Score: N`` with N in 1-5, else None. Never raises."""
    if not text:
        return None
    matches = _SCORE.findall(str(text))
    return int(matches[-1]) if matches else None


def score_distribution(top_logprobs: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Top-k next tokens -> ``{"probs": [p1..p5], "expected": E, "score": argmax, "mass": m}``.

    ``mass`` is the probability the model put on any score token at all (low mass: the
    model did not want to answer with a digit; the distribution is still defined). With
    no score token in the top-k, probs/expected/score are None.
    """
    probs = [0.0] * 5
    for entry in top_logprobs or ():
        token = str(entry.get("token", "")).strip()
        if len(token) == 1 and token in "12345":
            probs[int(token) - 1] += math.exp(float(entry["logprob"]))
    mass = sum(probs)
    if mass <= 0:
        return {"probs": None, "expected": None, "score": None, "mass": 0.0}
    probs = [p / mass for p in probs]
    expected = sum(score * p for score, p in zip(SCORES, probs, strict=True))
    best = max(range(5), key=lambda i: probs[i]) + 1
    return {"probs": probs, "expected": expected, "score": best, "mass": min(mass, 1.0)}


def passes(
    score: int | None,
    expected: float | None,
    *,
    min_score: int | None = None,
    min_expected: float | None = None,
) -> bool:
    """Threshold selection: integer ``score >= min_score`` and/or ``expected >= min_expected``."""
    if min_score is not None and (score is None or score < min_score):
        return False
    return not (min_expected is not None and (expected is None or expected < min_expected))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties (for the benchmark)."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need two equal-length sequences of at least 2 values")

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    vy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (vx * vy) if vx and vy else float("nan")


_ENGINE_COLUMNS = (
    "messages",
    "prompt",
    "generated_text",
    "num_input_tokens",
    "num_generated_tokens",
    "top_logprobs",
    "error",
)


def request_row(
    row: dict[str, Any],
    *,
    mode: Mode,
    scorer_format: ScorerFormat,
    score_prefix: str = SCORE_PREFIX,
) -> dict[str, Any]:
    """Engine row for one pair. Never raises: a bad pair gets empty messages, which the
    engine records as an invalid row."""
    try:
        instruction, response = row["instruction"], row["response"]
        if not isinstance(instruction, str) or not isinstance(response, str):
            raise TypeError("instruction and response must be strings")
        messages = request_messages(
            instruction, response, mode=mode, scorer_format=scorer_format, score_prefix=score_prefix
        )
    except Exception:  # noqa: BLE001
        messages = []
    return {**row, "messages": messages}


def finish_row(row: dict[str, Any], *, mode: Mode) -> dict[str, Any]:
    """Engine output row -> scored pair (``score``, ``expected_score``...) or a reject."""
    out = {k: v for k, v in row.items() if k not in _ENGINE_COLUMNS}
    out.update(
        score=None,
        expected_score=None,
        score_probs=None,
        score_mass=None,
        curation_output=row.get("generated_text") if mode == "generate" else None,
        reject_reason=None,
        reject_detail=None,
    )
    error = row.get("error")
    if error:
        invalid = str(error).startswith("invalid row")
        out.update(
            reject_reason="invalid input" if invalid else "engine error", reject_detail=str(error)
        )
        return out
    if mode == "logprobs":
        dist = score_distribution(row.get("top_logprobs"))
        if dist["score"] is None:
            out.update(reject_reason="no score token", score_mass=0.0)
            return out
        out.update(
            score=dist["score"],
            expected_score=dist["expected"],
            score_probs=dist["probs"],
            score_mass=dist["mass"],
        )
        return out
    score = parse_score(row.get("generated_text"))
    if score is None:
        out["reject_reason"] = "unparseable score"
    else:
        out.update(score=score, expected_score=float(score))
    return out
