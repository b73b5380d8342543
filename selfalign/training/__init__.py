"""Fine-tuning on Ray Train + DeepSpeed.

Pure parts (no torch/ray at import): ``config`` (``TrainConfig``), ``packing`` (the per-step
plan: which examples, which worker), ``schedule`` (the paper's steps, batch size and
learning rate). Runtime parts: ``data`` (read and tokenise rows), ``objectives`` (the
loss behind one interface: SFT today), ``batches`` (tensors for a step), ``loop`` (the
step loop, no Ray), ``worker`` (the Ray Train worker), ``model_io`` (load, LoRA, export),
``metrics`` (``metrics.jsonl``), ``driver`` (``train``: the TorchTrainer run).
"""
