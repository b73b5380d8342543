import pytest

from selfalign.stages.backtranslate.rows import clean_instruction, finish_row, safe_request_row

SEGMENT = "Sourdough starter needs feeding every day. Mix equal weights of flour and water..."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("How do I keep a sourdough starter alive?", "How do I keep a sourdough starter alive?"),
        ("Instruction: How do I feed a sourdough starter?", "How do I feed a sourdough starter?"),
        ('"Explain how to feed a starter."', "Explain how to feed a starter."),
        ("How often should I feed my starter?<|im_end|>", "How often should I feed my starter?"),
        ("How often should I feed it?\nAssistant: Every day.", "How often should I feed it?"),
        ("User: Question: What is a levain exactly?", "What is a levain exactly?"),
    ],
)
def test_clean_instruction_strips_markers_and_junk(raw, expected):
    assert clean_instruction(raw, SEGMENT) == (expected, None)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "no output"),
        ("", "empty"),
        ("<|im_end|>", "empty"),
        ("Explain.", "too short"),
        ("word " * 250, "too long"),
        ("the the the the the the", "repetitive"),
        ("bake the bread " * 20, "repetitive"),
        ("Sourdough starter needs feeding every day. Mix equal weights", "copies the segment"),
    ],
)
def test_degenerate_instructions_are_rejected_with_a_reason(raw, reason):
    assert clean_instruction(raw, SEGMENT) == (None, reason)


def test_finish_row_builds_a_pair_and_keeps_counts_honest():
    row = {
        "id": "s1",
        "text": SEGMENT,
        "source": "a.html",
        "header": "Starter",
        "messages": [],
        "generated_text": "How do I keep a sourdough starter alive?",
        "error": None,
    }
    out = finish_row(row)
    assert out["instruction"] == "How do I keep a sourdough starter alive?"
    assert out["response"] == SEGMENT and out["source"] == "augmented" and out["origin"] == "a.html"
    assert out["reject_reason"] is None and out["header"] == "Starter"
    assert "messages" not in out and "text" not in out
    failed = finish_row({**row, "generated_text": None, "error": "EngineDeadError: boom"})
    assert failed["reject_reason"] == "engine error" and "boom" in failed["reject_detail"]


def test_safe_request_row_never_raises():
    assert safe_request_row({"id": "x"})["messages"] == []  # no text: recorded downstream
    turn = safe_request_row({"id": "x", "text": SEGMENT})["messages"][-1]
    # Exactly the backward recipe's training prompt: the segment inside the template.
    assert turn["role"] == "user" and turn["content"].endswith(f"Text:\n{SEGMENT}\n")
