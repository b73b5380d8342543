import json

import pytest

from selfalign.core.models import ModelResolutionError, resolve_model


def test_hub_id_passes_through():
    resolved = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolved.kind == "hub"
    assert resolved.path == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_local_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    resolved = resolve_model(str(tmp_path))
    assert resolved.kind == "local" and resolved.path == str(tmp_path)


def test_local_directory_without_config_is_an_error(tmp_path):
    with pytest.raises(ModelResolutionError, match="config.json"):
        resolve_model(str(tmp_path))


@pytest.mark.parametrize("ref", ["", "  ", "embedded:nope", "not a/valid/ref!"])
def test_bad_refs(ref):
    with pytest.raises(ModelResolutionError):
        resolve_model(ref)


def test_object_store_uri_is_copied_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "bucket" / "model"
    source.mkdir(parents=True)
    (source / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (source / "weights.bin").write_bytes(b"\x00" * 10)
    first = resolve_model(f"file://{source}")
    assert first.kind == "object_store"
    assert first.path.startswith(str(tmp_path / "cache"))
    assert (tmp_path / "cache").exists()
    copied = {p.name for p in __import__("pathlib").Path(first.path).iterdir()}
    assert {"config.json", "weights.bin"} <= copied
    # A second resolution reuses the cache even if the source disappears.
    (source / "config.json").unlink()
    assert resolve_model(f"file://{source}").path == first.path


def test_object_store_missing_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFALIGN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelResolutionError, match="not a directory"):
        resolve_model(f"file://{tmp_path}/absent")


def test_tiny_model_loads_in_transformers_with_chat_template(tiny_model_path):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_path)
    assert config.head_dim == 64  # vLLM's CPU attention needs 64
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>user\nhi<|im_end|>" in text and text.endswith("<|im_start|>assistant\n")


def test_embedded_smollm2_is_a_real_model(smollm2_path):
    # The converted model must be the real SmolLM2, not random weights: greedy
    # decoding of a factual prompt gives the right answer.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][inputs["input_ids"].shape[1] :])
