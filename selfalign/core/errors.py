"""The errors a user can act on; the CLI turns each into exit status 2 with its message."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says what to fix."""


class InputError(ValueError):
    """Input that cannot be read (missing, unsupported, mixed formats)."""


class OutputConflict(ConfigError):
    """An output location holds another run's results; pass --overwrite or choose another."""


class ModelResolutionError(ValueError):
    """A model reference that names no model this machine can load."""
