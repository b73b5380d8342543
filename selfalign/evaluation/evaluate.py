"""Evaluation of one model of the loop: held-out loss and sample generations.

* Held-out loss: the mean per-example loss on human-written seed pairs that no model
  trained on, over the assistant tokens only, with exactly the labels training uses
  (``selfalign.formats.labels``) and the chat format the model was trained in (set by
  the recipe that planned it). The token-weighted mean is reported beside it.
* Sample generations: greedy replies to fixed prompts, for reading side by side.

It runs as one Ray task with the ``evaluate`` stage's resources of the profile (falling
back to ``default``): a GPU on a cluster, the engine's threads on a CPU machine.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from selfalign.core import io
from selfalign.core.embedded import eval_prompts_path
from selfalign.evaluation.config import EvaluateConfig

log = logging.getLogger(__name__)


def default_prompts() -> list[str]:
    text = Path(eval_prompts_path()).read_text()
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]


def run(config: EvaluateConfig, profile) -> dict[str, Any]:
    """Evaluate ``config.model`` on ``config.heldout``; writes ``config.output`` (JSON) and
    returns the figures without the sample generations."""
    heldout = io.read_table(config.heldout).to_pylist()
    settings = config.model_dump(exclude={"heldout", "output"})
    result = evaluate(profile=profile, heldout=heldout, **settings)
    io.write_json(config.output, result)
    return {k: v for k, v in result.items() if k != "samples"}


def evaluate(*, profile, **settings: Any) -> dict[str, Any]:
    """Run :func:`evaluate_local` (same ``settings``) as a Ray task sized by the profile's
    ``evaluate`` stage."""
    import ray

    stage = profile.stage("evaluate")
    threads = stage.omp_threads or max(1, math.ceil(stage.cpus_per_actor))
    task = ray.remote(evaluate_local).options(
        num_cpus=stage.cpus_per_actor,
        num_gpus=stage.gpus_per_actor if profile.device == "cuda" else 0,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}},
    )
    return ray.get(task.remote(**settings, device=profile.device, threads=threads))


def evaluate_local(
    *,
    model: str,
    heldout: list[dict],
    chat_format: str,
    source_tag: str | None,
    prompts: list[str] | None,
    max_new_tokens: int,
    max_seq_len: int,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfalign.core.models import resolve_model
    from selfalign.formats.conversations import ConversationError, conversation_for, prompt_messages
    from selfalign.formats.labels import tokenize_conversation

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    path = resolve_model(model).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    net = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    def tagged(row: dict) -> dict:
        # Curated models are asked as the paper recommends: with the seed (AI-Assistant) tag.
        return {**row, "source": source_tag} if source_tag else row

    losses, token_losses, tokens, skipped = [], 0.0, 0, []
    with torch.no_grad():
        for row in heldout:
            try:
                messages = conversation_for(tagged(row), chat_format)
                example = tokenize_conversation(tokenizer, messages, max_seq_len=max_seq_len)
            except ConversationError as err:
                skipped.append({"id": row.get("id"), "reason": str(err)})
                continue
            ids = torch.tensor([example.input_ids], device=device)
            # Position i predicts token i+1: the targets are the trainable tokens after the first.
            mask = torch.tensor(example.trainable[1:], device=device)
            if not bool(mask.any()):
                skipped.append({"id": row.get("id"), "reason": "no assistant tokens"})
                continue
            logits = net(ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")[mask]
            losses.append(float(nll.mean()))
            token_losses += float(nll.sum())
            tokens += int(mask.sum())
        loss_s = time.perf_counter() - started

        samples = []
        for prompt in prompts or default_prompts():
            messages = prompt_messages(tagged({"instruction": prompt}), chat_format)
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            encoded = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
            output = net.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            reply = tokenizer.decode(
                output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True
            )
            samples.append({"prompt": prompt, "reply": reply.strip()})

    return {
        "model": model,
        "chat_format": chat_format,
        "source_tag": source_tag,
        "heldout_examples": len(losses),
        "heldout_skipped": skipped,
        "heldout_loss": sum(losses) / len(losses) if losses else None,
        "heldout_token_loss": token_losses / tokens if tokens else None,
        "heldout_tokens": tokens,
        "samples": samples,
        "loss_s": round(loss_s, 2),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
