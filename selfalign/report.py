"""The run report: figures of a Humback run as one self-contained HTML page.

Input is the plain dictionary that ``selfalign.runtime.report.collect`` builds from a
run directory (also written as ``report.json``); plots are drawn with matplotlib's
non-interactive backend and embedded as inline SVG, so the page reads offline, from
any copy of the file, with no JavaScript. Pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

import html
import io
from typing import Any

SCORES = (1, 2, 3, 4, 5)


def _figure(width: float = 6.4, height: float = 3.2, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, columns, figsize=(width, height))
    return plt, fig, ax


def _svg(plt, fig) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})  # reproducible output
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG sits inside HTML


def _empty(message: str) -> str:
    return f'<p class="empty">{html.escape(message)}</p>'


def plot_score_histograms(curation: list[dict]) -> str:
    if not curation:
        return _empty("no curation yet")
    plt, fig, ax = _figure()
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
    return _svg(plt, fig)


def plot_expected_scores(curation: list[dict]) -> str:
    values = [item for item in curation if item["expected_scores"]]
    if not values:
        return _empty("no expected scores (generate-mode curation has none)")
    plt, fig, ax = _figure()
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
    return _svg(plt, fig)


def plot_lengths(lengths: dict) -> str:
    if not lengths.get("segment_chars"):
        return _empty("no backtranslated pairs yet")
    plt, fig, axes = _figure(9, 3.2, columns=2)
    axes[0].hist(lengths["segment_chars"], bins=30, color="tab:blue")
    axes[0].set_xlabel("segment length (characters)")
    axes[0].set_ylabel("segments")
    axes[1].hist(lengths["instruction_chars"] or [0], bins=30, color="tab:orange")
    axes[1].set_xlabel("generated instruction length (characters)")
    axes[1].set_ylabel("instructions")
    return _svg(plt, fig)


def plot_loss_curves(curves: dict[str, list[dict]]) -> str:
    if not curves:
        return _empty("no training runs yet")
    plt, fig, ax = _figure()
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.legend()
    return _svg(plt, fig)


def plot_heldout(heldout: list[dict]) -> str:
    rows = [r for r in heldout if r["heldout_loss"] is not None]
    if not rows:
        return _empty("no evaluations yet")
    plt, fig, ax = _figure()
    names = [r["model"] for r in rows]
    bars = ax.bar(names, [r["heldout_loss"] for r in rows], color="tab:green")
    ax.bar_label(bars, fmt="%.3f")
    low = min(r["heldout_loss"] for r in rows)
    ax.set_ylim(bottom=max(0.0, low * 0.9))  # differences between models are small
    ax.set_ylabel("held-out loss (mean per example)")
    return _svg(plt, fig)


def plot_throughput(steps: list[dict]) -> str:
    rows = [s for s in steps if s.get("rate")]
    if not rows:
        return _empty("no steps finished yet")
    plt, fig, ax = _figure(6.4, 0.35 * len(rows) + 1.2)
    labels = [f"{s['step']} ({s['rate_unit']})" for s in rows]
    bars = ax.barh(labels, [s["rate"] for s in rows], color="tab:purple")
    ax.bar_label(bars, fmt="%.3g")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("throughput (log scale; unit per row)")
    return _svg(plt, fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clip(text: str | None, limit: int = 600) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; margin: 0.2em 0; }
.empty { color: #888; font-style: italic; }
.pair { border-left: 3px solid #ccc; padding-left: 0.8em; margin-bottom: 1em; }
svg { max-width: 100%; height: auto; }
"""


def render_html(report: dict[str, Any]) -> str:
    """The whole report page from ``report`` (see ``selfalign.runtime.report.collect``)."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>selfalign run report: {esc(report['run_dir'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Humback run report</h1>",
        f"<p>Run directory <code>{esc(report['run_dir'])}</code>, base model "
        f"<code>{esc(report['model'])}</code>, {report['iterations']} iteration(s); "
        f"{report['steps_done']}/{report['steps_total']} steps done; written {esc(report['written'])}.</p>",
        "<h2>Held-out loss per model</h2>",
        "<p>Mean per-example loss on human-written seed pairs that no model trained on "
        "(assistant tokens only; lower is better).</p>",
        _table(
            ["model", "held-out loss", "token-weighted", "examples", "prompted as"],
            [
                [
                    r["model"],
                    r["heldout_loss"],
                    r["heldout_token_loss"],
                    r["heldout_examples"],
                    r["prompted_as"],
                ]
                for r in report["heldout"]
            ],
        ),
    ]
    if report.get("ablation"):
        a = report["ablation"]
        parts.append(
            f"<p><b>Does curation help?</b> M1 on seed + curated A(1): {_fmt(a['curated'])}; "
            f"M1 on seed + an equal-size random sample of A: {_fmt(a['random'])}; "
            f"difference {_fmt(a['difference'])} (negative: curation helped).</p>"
        )
    parts += [
        plot_heldout(report["heldout"]),
        "<h2>Curation</h2>",
        _table(
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
        "<h2>Segments and generated instructions</h2>",
        _table(
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
        "<h2>Training</h2>",
        _table(
            ["model", "examples", "steps", "batch", "final loss", "tokens/s", "wall s"],
            [
                [
                    t["model"],
                    t["examples"],
                    t["steps"],
                    t["batch_size"],
                    t["final_loss"],
                    t["tokens_per_s"],
                    t["elapsed_s"],
                ]
                for t in report["training"]
            ],
        ),
        plot_loss_curves(report["loss_curves"]),
        "<h2>Throughput per step</h2>",
        _table(
            ["step", "wall s", "throughput", "unit"],
            [
                [s["step"], s["elapsed_s"], s.get("rate"), s.get("rate_unit")]
                for s in report["steps"]
            ],
        ),
        plot_throughput(report["steps"]),
        "<h2>Example pairs at each score</h2>",
    ]
    if report["examples"]:
        parts.append(f"<p>From iteration {report['examples_iteration']}'s scores.</p>")
        for score in SCORES:
            parts.append(f"<h3>Score {score}</h3>")
            examples = report["examples"].get(str(score), [])
            if not examples:
                parts.append(_empty("no pair got this score"))
            for ex in examples:
                parts.append(
                    "<div class='pair'>"
                    f"<div>expected score {_fmt(ex['expected_score'])}</div>"
                    f"<b>Instruction</b><pre>{esc(_clip(ex['instruction'], 400))}</pre>"
                    f"<b>Response (web segment)</b><pre>{esc(_clip(ex['response']))}</pre></div>"
                )
    else:
        parts.append(_empty("no curation yet"))
    parts.append("<h2>Sample generations</h2>")
    for item in report["samples"]:
        parts.append(f"<h3>{esc(item['model'])}</h3>")
        for sample in item["samples"]:
            parts.append(
                f"<div class='pair'><b>{esc(sample['prompt'])}</b><pre>{esc(_clip(sample['reply']))}</pre></div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
