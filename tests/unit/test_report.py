"""The run report renders every section offline, escapes data, and copes with gaps."""

from __future__ import annotations

from selfalign.pipeline.html import render_html
from selfalign.recipes.humback import report as humback_report


def render(report):
    # The generic page with the Humback recipe's own sections, as write_report does it.
    return render_html(report, humback_report.render(report))


def _report(**changes):
    report = {
        "recipe": "humback",
        "title": "Humback run report",
        "run_dir": "runs/x",
        "model": "embedded:smollm2-135m-instruct",
        "iterations": 2,
        "written": "2026-11-21 12:00:00",
        "steps_done": 19,
        "steps_total": 19,
        "steps": [
            {"step": "augment", "kind": "backtranslate", "elapsed_s": 90.0, "rate": 1.1,
             "rate_unit": "rows/s"},
            {"step": "m0", "kind": "train", "elapsed_s": 120.0, "rate": 150.0,
             "rate_unit": "tokens/s"},
        ],
        "heldout": [
            {"model": "base", "heldout_loss": 1.9, "heldout_token_loss": 1.8,
             "heldout_examples": 10, "prompted_as": "seed"},
            {"model": "m1", "heldout_loss": 1.7, "heldout_token_loss": 1.6,
             "heldout_examples": 10, "prompted_as": "curated + seed tag"},
        ],
        "ablation": {"curated": 1.7, "random": 1.75, "difference": -0.05},
        "curation": [
            {"iteration": 1, "scorer": "m0", "rows": 4, "selected": 2, "selection": "top_n=2",
             "threshold": None, "score_counts": {"1": 1, "2": 0, "3": 2, "4": 1, "5": 0},
             "expected_scores": [2.1, 3.0, 3.2, 4.1], "mean_expected": 3.1},
        ],
        "examples": {"3": [{"instruction": "<script>alert(1)</script>", "response": "r" * 2000,
                            "expected_score": 3.2}]},
        "examples_iteration": 1,
        "augment": {"rows": 4, "accepted": 3, "reject_reasons": {"too_short": 1}},
        "lengths": {"segment_chars": [700, 900, 1200, 2000], "instruction_chars": [40, 60, 80]},
        "training": [{"model": "m0", "examples": 60, "steps": 8, "batch_size": 8,
                      "final_loss": 1.5, "tokens_per_s": 150.0, "elapsed_s": 120.0}],
        "loss_curves": {"m0": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.8}]},
        "samples": [{"model": "m1", "samples": [{"prompt": "Hi & bye", "reply": "Hello"}]}],
    }  # fmt: skip
    report.update(changes)
    return report


def test_every_plot_is_inline_svg_and_the_page_needs_no_network():
    page = render(_report())
    # score histogram, expected scores, lengths, loss curves, held-out, throughput
    assert page.count("<svg") == 6
    # Nothing is loaded from elsewhere (XML namespace URIs are names, not requests).
    for loader in ('src="http', "src='http", 'href="http', "<link", "@import", "url(http"):
        assert loader not in page
    assert "<script" not in page.lower().replace("&lt;script", "")
    assert "Does curation help?" in page and "-0.05" in page


def test_data_is_escaped_and_long_text_clipped():
    page = render(_report())
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "r" * 2000 not in page and "r" * 600 + " …" in page
    assert "Hi &amp; bye" in page


def test_a_run_without_results_still_renders():
    page = render(
        _report(
            steps=[], heldout=[], ablation=None, curation=[], examples={}, augment={},
            lengths={"segment_chars": [], "instruction_chars": []}, training=[],
            loss_curves={}, samples=[],
        )
    )  # fmt: skip
    assert "<svg" not in page
    assert page.count('class="empty"') >= 5
    assert "Does curation help?" not in page


def test_the_generic_page_knows_no_recipe():
    # Without recipe sections: held-out loss, training, throughput, samples only.
    page = render_html(_report())
    assert page.count("<svg") == 3  # held-out, loss curves, throughput
    assert "Curation" not in page and "Does curation help?" not in page
    assert "<h1>Humback run report</h1>" in page
