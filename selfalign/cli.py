"""``selfalign`` command line: one subcommand per pipeline stage."""

from __future__ import annotations

import argparse
import sys

from selfalign.config import ConfigError

# name -> module with make_parser(parser) and main(args); imported lazily so that
# `selfalign --help` does not import ray or vllm.
COMMANDS = {
    "generate": "selfalign.commands.generate",
    "train": "selfalign.commands.train",
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
    args = parser.parse_args(argv)
    try:
        return args._main(args)
    except ConfigError as err:
        print(f"selfalign: config error: {err}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        from selfalign.models import ModelResolutionError
        from selfalign.runtime.io import InputError

        if isinstance(err, InputError | ModelResolutionError | FileNotFoundError):
            print(f"selfalign: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
