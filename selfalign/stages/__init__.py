"""The stages: each reads a dataset URI and writes one.

One folder (or module) per stage, each with its config and pure row logic beside its
Ray wiring: ``ingest`` (seed pairs and web documents), ``generate`` (any rows through the
engine), ``backtranslate`` (self-augmentation), ``curate`` (self-curation), and the
small data steps ``split`` (hold out evaluation pairs) and ``mix`` (a tagged training
mix). Stages never reach into each other's internals.
"""
