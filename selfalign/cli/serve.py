"""``selfalign serve``: the current model as an HTTP scoring service on Ray Serve.

Routes: ``POST /v1/score`` (a pair or a batch -> score distribution, as ``selfalign
curate`` computes it), ``POST /v1/backtranslate`` (segment -> instruction, backward
model), ``GET /v1/models``, ``GET /healthz``, ``GET /openapi.json``. ``/v1`` routes need
``Authorization: Bearer $SELFALIGN_SERVE_TOKEN`` unless the service is started ``--open``.
Replicas autoscale as the profile's ``serve`` section of ``ray_config.yaml`` says, and
switch models when the loop publishes one (``model_pointer``, see selfalign.core.pointers).

    SELFALIGN_SERVE_TOKEN=secret selfalign serve --model runs/m0/model --port 8000
    selfalign serve --open model_pointer=runs/loop/serve/current.json poll_interval_s=10
"""

from __future__ import annotations

import argparse

from selfalign.cli.common import add_config_arguments, flag_overrides, setup_logging
from selfalign.core.config import build_config
from selfalign.serving.config import ServeConfig

FLAGS = {"model": "model", "backward_model": "backward_model", "host": "host", "port": "port"}


def make_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="selfalign serve", description=__doc__)
    parser.add_argument("--model", help="current model (default: embedded:smollm2-135m-instruct)")
    parser.add_argument(
        "--backward-model", help="backward model for /v1/backtranslate (default: --model's engine)"
    )
    parser.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument(
        "--token",
        help="bearer token (prefer $SELFALIGN_SERVE_TOKEN: arguments show up in ps)",
    )
    auth.add_argument(
        "--open", action="store_true", default=None, help="serve without authentication"
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="deploy and return (the application keeps running on the cluster)",
    )
    add_config_arguments(parser)
    return parser


def load_config(args: argparse.Namespace) -> ServeConfig:
    overrides = flag_overrides(args, FLAGS)
    config = build_config(ServeConfig, args.config, overrides)
    # The token never goes through the YAML override parser (it could read "123" as int).
    updates = {}
    if args.token:
        updates["token"] = args.token
    if args.open:
        updates["open"] = True
    return config.model_copy(update=updates) if updates else config


def main(args: argparse.Namespace) -> int:
    setup_logging()
    config = load_config(args)
    from selfalign.serving.app import run_service

    url = run_service(config, block=not args.detach)
    if args.detach:
        print(url)
    return 0
