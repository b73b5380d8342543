"""``selfalign generate``: any rows through the engine. ``config`` (pure) and ``stage``."""
