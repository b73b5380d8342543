"""Supervised fine-tuning for the self-alignment loop: the pure parts.

* ``recipes``  — what each model is trained on (backward, seed, curated) and the
  source-tag system prompts: ``conversation_for`` / ``prompt_messages``, shared with scoring;
* ``labels``   — token ids and assistant-only loss masks, built message by message;
* ``packing``  — the per-step plan (which examples, which worker) and packed/padded batches;
* ``schedule`` — steps by data size, batch size, learning rate at a step (the paper's defaults);
* ``config``   — ``TrainConfig``.

The Ray Train + DeepSpeed runtime lives in ``selfalign.runtime.train``. No module here
imports torch, ray or transformers at import time.
"""

from selfalign.training.recipes import (
    RECIPES,
    SOURCE_TAG_PROMPTS,
    ConversationError,
    conversation_for,
    prompt_messages,
    source_tag_prompt,
)

__all__ = [
    "RECIPES",
    "SOURCE_TAG_PROMPTS",
    "ConversationError",
    "conversation_for",
    "prompt_messages",
    "source_tag_prompt",
]
