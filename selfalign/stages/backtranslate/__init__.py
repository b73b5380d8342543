"""Self-augmentation: the backward model writes one instruction per web segment.

``config`` (``BacktranslateConfig``), ``rows`` (request rows, instruction cleaning; pure),
``stage`` (the engine stage).
"""
