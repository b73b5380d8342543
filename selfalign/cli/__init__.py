"""``selfalign`` command line: one subcommand per stage, plus ``run <recipe>`` and ``serve``.

Each command module has ``make_parser()`` and ``main(args)``; the ``selfalign`` CLI and
the ``jobs/`` scripts (for ``ray job submit``) both call them. Commands only parse
arguments into typed configs and call the stage, training, pipeline or service entry
points below them.
"""

from __future__ import annotations

import argparse
import sys

from selfalign.core.errors import ConfigError

# name -> module with make_parser(parser) and main(args); imported lazily so that
# `selfalign --help` does not import ray or vllm.
COMMANDS = {
    "generate": "selfalign.cli.generate",
    "backtranslate": "selfalign.cli.backtranslate",
    "curate": "selfalign.cli.curate",
    "train": "selfalign.cli.train",
    "ingest": "selfalign.cli.ingest",
    "serve": "selfalign.cli.serve",
    "run": "selfalign.cli.run",
}


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="selfalign", description="Self-alignment data pipelines on Ray + vLLM."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or "").strip().splitlines()[0]
        command = sub.add_parser(
            name,
            help=doc,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.make_parser(command)
        command.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # KEY=VALUE overrides may come anywhere, also after options, which a plain
    # nargs="*" positional does not collect; anything else unknown is still an error.
    args, unknown = parser.parse_known_args(argv)
    stray = [item for item in unknown if item.startswith("-") or "=" not in item]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if unknown:
        args.overrides = [*(getattr(args, "overrides", None) or []), *unknown]
    try:
        return args._main(args)
    except ConfigError as err:
        print(f"selfalign: config error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        from selfalign.core.errors import InputError, ModelResolutionError

        if isinstance(err, InputError | ModelResolutionError | FileNotFoundError):
            print(f"selfalign: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
