"""Evaluation of a model: held-out loss on assistant tokens and sample generations.

``config`` (``EvaluateConfig``, pure) and ``evaluate`` (one Ray task with the
``evaluate`` stage's resources).
"""
