"""CLI commands. Each module has ``make_parser()`` and ``main(args)``; the ``selfalign``
CLI and the ``jobs/`` scripts (for ``ray job submit``) both call them."""
