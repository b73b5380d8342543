"""The run report as one self-contained HTML page, and the pieces recipes build sections from.

Input is the plain dictionary that ``selfalign.pipeline.report.collect`` builds from a
run directory (also written as ``report.json``); plots are drawn with matplotlib's
non-interactive backend and embedded as inline SVG, so the page reads offline, from
any copy of the file, with no JavaScript. ``figure``/``svg``/``table``/``empty``/``clip``
are what a recipe's ``render`` uses for its own sections. Pure: no ray/vllm/torch imports.
"""

from __future__ import annotations

import html
import io
from typing import Any


def figure(width: float = 6.4, height: float = 3.2, columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, columns, figsize=(width, height))
    return plt, fig, ax


def svg(plt, fig) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})  # reproducible output
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG sits inside HTML


def empty(message: str) -> str:
    return f'<p class="empty">{html.escape(message)}</p>'


def plot_loss_curves(curves: dict[str, list[dict]]) -> str:
    if not curves:
        return empty("no training runs yet")
    plt, fig, ax = figure()
    for name, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.legend()
    return svg(plt, fig)


def plot_heldout(heldout: list[dict]) -> str:
    rows = [r for r in heldout if r["heldout_loss"] is not None]
    if not rows:
        return empty("no evaluations yet")
    plt, fig, ax = figure()
    names = [r["model"] for r in rows]
    bars = ax.bar(names, [r["heldout_loss"] for r in rows], color="tab:green")
    ax.bar_label(bars, fmt="%.3f")
    low = min(r["heldout_loss"] for r in rows)
    ax.set_ylim(bottom=max(0.0, low * 0.9))  # differences between models are small
    ax.set_ylabel("held-out loss (mean per example)")
    return svg(plt, fig)


def plot_throughput(steps: list[dict]) -> str:
    rows = [s for s in steps if s.get("rate")]
    if not rows:
        return empty("no steps finished yet")
    plt, fig, ax = figure(6.4, 0.35 * len(rows) + 1.2)
    labels = [f"{s['step']} ({s['rate_unit']})" for s in rows]
    bars = ax.barh(labels, [s["rate"] for s in rows], color="tab:purple")
    ax.bar_label(bars, fmt="%.3g")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("throughput (log scale; unit per row)")
    return svg(plt, fig)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def clip(text: str | None, limit: int = 600) -> str:
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


def render_html(report: dict[str, Any], sections: list[str] | None = None) -> str:
    """The whole report page from ``report`` (see ``selfalign.pipeline.report.collect``);
    ``sections``: the recipe's own HTML, placed after the held-out loss."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>selfalign run report: {esc(report['run_dir'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(report.get('title') or 'Run report')}</h1>",
        f"<p>Run directory <code>{esc(report['run_dir'])}</code>, base model "
        f"<code>{esc(report['model'])}</code>; "
        f"{report['steps_done']}/{report['steps_total']} steps done; written {esc(report['written'])}.</p>",
        "<h2>Held-out loss per model</h2>",
        "<p>Mean per-example loss on human-written pairs that no model trained on "
        "(assistant tokens only; lower is better).</p>",
        table(
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
        plot_heldout(report["heldout"]),
        *(sections or []),
        "<h2>Training</h2>",
        table(
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
        table(
            ["step", "wall s", "throughput", "unit"],
            [
                [s["step"], s["elapsed_s"], s.get("rate"), s.get("rate_unit")]
                for s in report["steps"]
            ],
        ),
        plot_throughput(report["steps"]),
        "<h2>Sample generations</h2>",
    ]
    if not report["samples"]:
        parts.append(empty("no evaluations yet"))
    for item in report["samples"]:
        parts.append(f"<h3>{esc(item['model'])}</h3>")
        for sample in item["samples"]:
            parts.append(
                f"<div class='pair'><b>{esc(sample['prompt'])}</b><pre>{esc(clip(sample['reply']))}</pre></div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
