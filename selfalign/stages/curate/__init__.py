"""Self-curation: the current model rates each (instruction, response) pair 1-5.

``config`` (``CurateConfig``, ``SelectionSettings``), ``rows`` (rubric requests,
logprobs/generate scoring, thresholds; pure), ``stage`` (the engine stage and the
score-prefix detection), ``select`` (writes the pairs that pass the selection).
"""
