"""Chat formats: how a data row becomes the conversation a model trains on or is prompted with.

* ``conversations`` — the chat formats (``backward``, ``seed``, ``curated``) and the
  source-tag system prompts: ``conversation_for`` / ``prompt_messages``;
* ``labels``        — token ids and assistant-only loss masks, built message by message;
* ``prompts/``      — the prompt templates, as package files, and ``render``.

Pure: no ray/vllm/torch imports (``labels`` takes any tokenizer object).
"""
