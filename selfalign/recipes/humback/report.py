"""The Humback sections of the run report: curation, the ablation, segments, examples.

``collect`` reads what the curate and backtranslate steps wrote (by step kind and label,
never by parsing step names); ``render`` draws the sections with the generic report's
pieces. Pure: pyarrow and matplotlib only.
"""

from __future__ import annotations

import html
from typing import Any

from selfalign.core import io
from selfalign.pipeline.html import clip, empty, figure, fmt, svg, table
from selfalign.pipeline.recipe import ReportInput

SCORES = (1, 2, 3, 4, 5)
EXAMPLES_PER_SCORE = 2


def collect(run: ReportInput) -> dict[str, Any]:
    import pyarrow.compute as pc

    heldout = {}
    for step in run.done("evaluate"):
        heldout[step.labels.get("model")] = (io.read_json(step.output("result")) or {}).get(
            "heldout_loss"
        )
    ablation = None
    if heldout.get("m1") is not None and heldout.get("m1_random") is not None:
        ablation = {
            "curated": heldout["m1"],
            "random": heldout["m1_random"],
            "difference": heldout["m1"] - heldout["m1_random"],
        }

    curation, examples, examples_iteration = [], {}, None
    for step in run.done("curate"):
        table_ = io.read_table(
            step.output("data"),
            columns=["id", "instruction", "response", "score", "expected_score", "reject_reason"],
        )
        if "reject_reason" in table_.column_names:
            table_ = table_.filter(pc.field("reject_reason").is_null())
        scores = table_.column("score").to_pylist() if "score" in table_.column_names else []
        expected = (
            [x for x in table_.column("expected_score").to_pylist() if x is not None]
            if "expected_score" in table_.column_names
            else []
        )
        selection = step.config.selection
        iteration = step.labels["iteration"]
        curation.append(
            {
                "iteration": iteration,
                "scorer": step.labels["scorer"],
                "rows": table_.num_rows,
                "selected": run.records[step.name]["result"].get("selected"),
                "selection": ", ".join(
                    f"{k}={v}" for k, v in selection.model_dump().items() if v is not None
                ),
                "threshold": selection.min_expected,
                "score_counts": {str(s): scores.count(s) for s in SCORES},
                "expected_scores": [round(x, 4) for x in expected],
                "mean_expected": sum(expected) / len(expected) if expected else None,
            }
        )
        examples, examples_iteration = {}, iteration  # the latest iteration's examples win
        rows = sorted(table_.to_pylist(), key=lambda r: (-(r.get("expected_score") or 0), r["id"]))
        for row in rows:
            bucket = examples.setdefault(str(row.get("score")), [])
            if len(bucket) < EXAMPLES_PER_SCORE:
                bucket.append(
                    {k: row.get(k) for k in ("instruction", "response", "expected_score")}
                )

    augment: dict[str, Any] = {}
    lengths: dict[str, list[int]] = {"segment_chars": [], "instruction_chars": []}
    for step in run.done("backtranslate"):
        augment = run.records[step.name]["result"]
        table_ = io.read_table(
            step.output("data"), columns=["response", "instruction", "reject_reason"]
        )
        lengths["segment_chars"] = [len(t or "") for t in table_.column("response").to_pylist()]
        accepted = table_.filter(pc.field("reject_reason").is_null())
        lengths["instruction_chars"] = [
            len(t or "") for t in accepted.column("instruction").to_pylist()
        ]

    return {
        "iterations": run.config.iterations,
        "ablation": ablation,
        "curation": curation,
        "curated": {c["iteration"]: c["selected"] for c in curation},
        "examples": examples,
        "examples_iteration": examples_iteration,
        "augment": augment,
        "lengths": lengths,
    }


def plot_score_histograms(curation: list[dict]) -> str:
    if not curation:
        return empty("no curation yet")
    plt, fig, ax = figure()
    width = 0.8 / len(curation)
    for i, item in enumerate(curation):
        counts = [item["score_counts"].get(str(s), 0) for s in SCORES]
        ax.bar(
            [s + (i - (len(curation) - 1) / 2) * width for s in SCORES],
            counts,
            width,
            label=f"iteration {item['iteration']} ({item['scorer']})",
        )
    ax.set_xlabel("score (argmax of P(1..5))")
    ax.set_ylabel("pairs")
    ax.set_xticks(SCORES)
    ax.legend()
    return svg(plt, fig)


def plot_expected_scores(curation: list[dict]) -> str:
    values = [item for item in curation if item["expected_scores"]]
    if not values:
        return empty("no expected scores (generate-mode curation has none)")
    plt, fig, ax = figure()
    for item in values:
        ax.hist(
            item["expected_scores"],
            bins=32,
            range=(1, 5),
            alpha=0.55,
            label=f"iteration {item['iteration']} ({item['scorer']})",
        )
    for item in values:
        if item.get("threshold") is not None:
            ax.axvline(item["threshold"], linestyle="--", linewidth=1)
    ax.set_xlabel("expected score")
    ax.set_ylabel("pairs")
    ax.legend()
    return svg(plt, fig)


def plot_lengths(lengths: dict) -> str:
    if not lengths.get("segment_chars"):
        return empty("no backtranslated pairs yet")
    plt, fig, axes = figure(9, 3.2, columns=2)
    axes[0].hist(lengths["segment_chars"], bins=30, color="tab:blue")
    axes[0].set_xlabel("segment length (characters)")
    axes[0].set_ylabel("segments")
    axes[1].hist(lengths["instruction_chars"] or [0], bins=30, color="tab:orange")
    axes[1].set_xlabel("generated instruction length (characters)")
    axes[1].set_ylabel("instructions")
    return svg(plt, fig)


def render(report: dict[str, Any]) -> list[str]:
    esc = html.escape
    parts = []
    if report.get("ablation"):
        a = report["ablation"]
        parts.append(
            f"<p><b>Does curation help?</b> M1 on seed + curated A(1): {fmt(a['curated'])}; "
            f"M1 on seed + an equal-size random sample of A: {fmt(a['random'])}; "
            f"difference {fmt(a['difference'])} (negative: curation helped).</p>"
        )
    parts += [
        "<h2>Curation</h2>",
        table(
            ["iteration", "scorer", "pairs scored", "selected", "selection", "mean expected score"],
            [
                [
                    c["iteration"],
                    c["scorer"],
                    c["rows"],
                    c["selected"],
                    c["selection"],
                    c["mean_expected"],
                ]
                for c in report["curation"]
            ],
        ),
        plot_score_histograms(report["curation"]),
        plot_expected_scores(report["curation"]),
        "<h2>Example pairs at each score</h2>",
    ]
    if report["examples"]:
        parts.append(f"<p>From iteration {report['examples_iteration']}'s scores.</p>")
        for score in SCORES:
            parts.append(f"<h3>Score {score}</h3>")
            examples = report["examples"].get(str(score), [])
            if not examples:
                parts.append(empty("no pair got this score"))
            for ex in examples:
                parts.append(
                    "<div class='pair'>"
                    f"<div>expected score {fmt(ex['expected_score'])}</div>"
                    f"<b>Instruction</b><pre>{esc(clip(ex['instruction'], 400))}</pre>"
                    f"<b>Response (web segment)</b><pre>{esc(clip(ex['response']))}</pre></div>"
                )
    else:
        parts.append(empty("no curation yet"))
    parts += [
        "<h2>Segments and generated instructions</h2>",
        table(
            ["backtranslation", "count"],
            [
                ["segments in", report["augment"].get("rows")],
                ["instructions accepted", report["augment"].get("accepted")],
            ]
            + [
                [f"rejected: {k}", v]
                for k, v in report["augment"].get("reject_reasons", {}).items()
            ],
        ),
        plot_lengths(report["lengths"]),
    ]
    return parts
