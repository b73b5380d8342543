"""Loading the model to train (dropout, ZeRO-3 partitioned loading, LoRA) and exporting it.

The export gathers the full weights on rank 0 (parameter by parameter, so ZeRO-3 never
materialises a second full copy on a GPU) and writes them with ``save_pretrained`` as
safetensors, with the tokenizer and its chat template: a directory vLLM and transformers
load as is.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from typing import Any

from selfalign.core import io
from selfalign.core.errors import ConfigError
from selfalign.training.config import TrainConfig

log = logging.getLogger(__name__)

MODEL_DIR_NAME = "model"
# Model config fields that hold dropout probabilities across common architectures
# (Llama has only attention_dropout).
_DROPOUT_FIELDS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
)


def load_model(config: TrainConfig, *, zero3: bool, ds_config: dict | None, dtype):
    """(model, local model path, pad token id) for ``config.model``.

    ``zero3`` with a DeepSpeed config builds the model already partitioned
    (``deepspeed.zero.Init``); without DeepSpeed (``ds_config=None``) it is a plain model.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from selfalign.core.models import resolve_model

    model_path = resolve_model(config.model).path
    model_config = AutoConfig.from_pretrained(model_path)
    # Modules copy dropout probabilities from the config when they are built: set them
    # before loading (the export is written from the unmodified config).
    for name in _DROPOUT_FIELDS:
        if isinstance(getattr(model_config, name, None), float | int):
            setattr(model_config, name, config.dropout)
    kwargs: dict[str, Any] = {"config": model_config, "dtype": dtype, "attn_implementation": "sdpa"}
    keep_alive = None
    if zero3 and ds_config is not None and not config.lora:
        # Lets from_pretrained build the model already partitioned (deepspeed.zero.Init),
        # so no worker ever holds the full weights: what makes ZeRO-3 fit large models.
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (must outlive from_pretrained)
    if config.lora and config.lora.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    del keep_alive
    model.config.use_cache = False
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.lora:
        model = _wrap_lora(model, config)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    return model, model_path, pad_id


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )


def _wrap_lora(model, config: TrainConfig):
    try:
        from peft import get_peft_model, prepare_model_for_kbit_training
    except ImportError:
        raise ConfigError("lora needs peft: pip install 'selfalign[lora]'") from None
    if config.lora.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return get_peft_model(model, lora_config(config))


def export(
    module, config: TrainConfig, model_path: str, output: str, *, rank: int, zero3: bool, dtype
) -> None:
    """Write ``<output>/model`` from the trained ``module`` (a collective under ZeRO-3:
    every rank calls it)."""
    state = gather_full_state(module, zero3=zero3, rank=rank)
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="selfalign-export-") as directory:
            write_hf_model(state, config, model_path, directory, dtype)
            io.publish_dir(directory, f"{output}/{MODEL_DIR_NAME}")
        log.info("exported %s/%s", output, MODEL_DIR_NAME)


def gather_full_state(module, *, zero3: bool, rank: int) -> dict:
    """Full tensors on rank 0's CPU. ZeRO-3 gathers one parameter at a time (collective:
    every rank walks the same parameters in the same order)."""
    state = {}
    for name, param in module.named_parameters():
        if zero3:
            import deepspeed

            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if rank == 0:
                    state[name] = param.detach().to("cpu", copy=True)
        elif rank == 0:
            state[name] = param.detach().to("cpu", copy=True)
    if rank == 0:
        persistent = set(module.state_dict().keys())
        for name, buffer in module.named_buffers():
            if name in persistent:
                state[name] = buffer.detach().to("cpu", copy=True)
    return state


def write_hf_model(
    state: dict, config: TrainConfig, model_path: str, directory: str, dtype
) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if config.lora:
        from peft import get_peft_model

        base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        peft_model = get_peft_model(base, lora_config(config))
        _check_load(peft_model.load_state_dict(state, strict=False), peft_model)
        model = peft_model.merge_and_unload()
    else:
        # Built on the meta device and filled with the gathered tensors: no second
        # random initialisation of a large model. The base config (not the training one,
        # with its dropout) is what is exported.
        model_config = AutoConfig.from_pretrained(model_path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
        _check_load(model.load_state_dict(state, strict=False, assign=True), model)
        model.tie_weights()
    model.config.use_cache = True
    model.save_pretrained(directory, safe_serialization=True)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(directory)
    with contextlib.suppress(OSError):  # a base model without a generation config
        GenerationConfig.from_pretrained(model_path).save_pretrained(directory)


def _check_load(result, model) -> None:
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied and not k.endswith("lm_head.weight")]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"export: state mismatch, missing={missing[:5]} unexpected={result.unexpected_keys[:5]}"
        )
