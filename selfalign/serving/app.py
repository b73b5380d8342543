"""The scoring service on Ray Serve: a FastAPI ingress whose replicas each hold a vLLM engine.

Each replica of ``ScoringService`` holds a ``ModelRunner`` (``selfalign.serving.runner``):
one vLLM async engine that batches the pairs of concurrent requests. Requests and
guards are pure (``schemas``, ``guard``, ``rows``); this module only adapts them to Serve.

Model updates (in-place, pointer-driven): the loop calls
``selfalign.core.pointers.publish_model(run_dir, model_path)``; each replica polls the pointer
(``model_pointer``), builds the new engine beside the old one in a worker thread while
the old one keeps serving, swaps, lets requests that started on the old engine finish
(``drain_timeout_s``), then shuts it down. A pointer rather than a Serve redeploy: under
a KubeRay RayService the operator owns the Serve config and would revert a redeploy made
by the loop, whereas a pointer works the same on a laptop and on a cluster. (Redeploying
with a new ``model`` argument also works: Serve replaces replicas gracefully.) On a GPU,
two engines share the replica's GPU during a switch: keep ``vllm.gpu_memory_utilization``
below 0.5 where hot switches are needed.

``build_app(args)`` is the application builder a RayService references as
``import_path: selfalign.serving.app:build_app``.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from typing import Any

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from selfalign.core.config import build_config
from selfalign.core.resources import ResourceProfile, ServeResources, load_ray_config
from selfalign.engine.processor import engine_env
from selfalign.serving import guard, schemas
from selfalign.serving.config import ServeConfig
from selfalign.serving.runner import EngineUnavailable, ModelRunner, engine_spec

log = logging.getLogger(__name__)

ROUTES = ("/v1/score", "/v1/backtranslate", "/v1/models", "/healthz", "/openapi.json")
_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


# --------------------------------------------------------------------------- metrics


@functools.cache
def _metrics():
    # Created on first use inside the replica process (Ray metrics are per process).
    from ray.serve.metrics import Counter, Histogram

    return {
        "requests": Counter(
            "selfalign_serve_requests",
            description="HTTP requests by route and status.",
            tag_keys=("route", "status"),
        ),
        "latency": Histogram(
            "selfalign_serve_latency_seconds",
            description="Request latency by route.",
            boundaries=_LATENCY_BOUNDARIES,
            tag_keys=("route",),
        ),
        "batch": Histogram(
            "selfalign_serve_batch_rows",
            description="Pairs (or segments) per request.",
            boundaries=_BATCH_BOUNDARIES,
            tag_keys=("route",),
        ),
    }


class MetricsMiddleware:
    """Outermost ASGI middleware: counts every response (401/413 included) and its latency."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = guard.relative_path(scope)
        route = path if path in ROUTES else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            try:
                metrics = _metrics()
                metrics["requests"].inc(tags={"route": route, "status": str(status["code"])})
                metrics["latency"].observe(time.perf_counter() - started, tags={"route": route})
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                log.debug("metrics not recorded", exc_info=True)


def _record_batch(route: str, size: int) -> None:
    try:
        _metrics()["batch"].observe(size, tags={"route": route})
    except Exception:  # noqa: BLE001
        log.debug("metrics not recorded", exc_info=True)


# --------------------------------------------------------------------------- the app


def _error(status: int, error: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def make_api(token: str | None, limits) -> FastAPI:
    """The FastAPI app: guards, error shapes. Routes are added by the deployment class."""
    api = FastAPI(
        title="selfalign scoring service",
        version="1",
        description="Humback self-curation scores and instruction backtranslation from the "
        "loop's current model. Send `Authorization: Bearer <token>` on /v1 routes.",
    )

    @api.exception_handler(RequestValidationError)
    async def _invalid(_request, exc: RequestValidationError):
        return _error(422, "invalid request", schemas.validation_message(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        # FastAPI answers 400 for a body it could not decode at all (a number beyond
        # Python's digit limit, nesting too deep): that is a malformed body, like bad JSON.
        if exc.status_code == 400:
            return _error(422, "invalid request", f"malformed JSON body: {exc.detail}")
        return _error(exc.status_code, str(exc.detail))

    @api.exception_handler(schemas.ServeError)
    async def _refused(_request, exc: schemas.ServeError):
        return _error(exc.status, "request refused", exc.message)

    @api.exception_handler(EngineUnavailable)
    async def _unavailable(_request, exc: EngineUnavailable):
        return _error(503, "engine unavailable", str(exc))

    @api.exception_handler(Exception)
    async def _internal(_request, exc: Exception):
        log.exception("internal error")
        return _error(500, "internal error", type(exc).__name__)

    # Added last = outermost: metrics see the guard's 401/413 answers too.
    api.add_middleware(
        guard.GuardMiddleware, token=token, max_request_bytes=limits.max_request_bytes
    )
    api.add_middleware(MetricsMiddleware)
    return api


_ERRORS = {
    401: {"model": schemas.ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {"model": schemas.ErrorResponse, "description": "Body, batch or a field too large."},
    422: {"model": schemas.ErrorResponse, "description": "Malformed JSON or schema error."},
    503: {"model": schemas.ErrorResponse, "description": "The engine is restarting."},
}


def _model_header(response: Response, info: dict[str, Any]) -> None:
    response.headers["x-selfalign-model"] = f"{info['ref']}@{info['version']}"


def service_deployment(api: FastAPI):
    """The ingress deployment class for ``api`` (a class per app: routes bind to ``api``)."""

    @serve.deployment(name="ScoringService")
    @serve.ingress(api)
    class ScoringService:
        def __init__(self, config: dict, device: str, resources: dict, backward=None):
            self.config = ServeConfig.model_validate(config)
            self.runner = ModelRunner(
                self.config,
                role="current",
                device=device,
                resources=ServeResources.model_validate(resources),
            )
            self.backward = backward  # a BackwardModel handle, or None: use our engine

        async def check_health(self) -> None:
            self.runner.check_health()

        @api.get("/healthz")
        async def healthz(self) -> dict[str, str]:
            self.runner.ensure_watcher()
            return {"status": "ok"}

        @api.get("/v1/models", response_model=schemas.ModelsResponse, responses=_ERRORS)
        async def models(self, response: Response):
            self.runner.ensure_watcher()
            current = self.runner.info()
            if self.backward is not None:
                backward = await self.backward.info.remote()
            else:
                backward = {**current, "role": "backward"}
            _model_header(response, current)
            return {"object": "list", "data": [current, backward]}

        @api.post("/v1/score", response_model=schemas.ScoreResponse, responses=_ERRORS)
        async def score(self, body: schemas.ScoreRequest, response: Response):
            self.runner.ensure_watcher()
            rows = body.rows()
            schemas.check_rows(rows, ("instruction", "response"), self.config.limits)
            _record_batch("/v1/score", len(rows))
            results, info = await self.runner.score(rows, body.mode)
            _model_header(response, info)
            return {"model": info, "mode": body.mode, "results": results}

        @api.post(
            "/v1/backtranslate", response_model=schemas.BacktranslateResponse, responses=_ERRORS
        )
        async def backtranslate(self, body: schemas.BacktranslateRequest, response: Response):
            self.runner.ensure_watcher()
            rows = body.rows()
            schemas.check_rows(rows, ("text",), self.config.limits)
            _record_batch("/v1/backtranslate", len(rows))
            if self.backward is not None:
                results, info = await self.backward.backtranslate.remote(rows)
            else:
                results, info = await self.runner.backtranslate(rows)
            _model_header(response, info)
            return {"model": info, "results": results}

        def __del__(self):
            runner = getattr(self, "runner", None)
            if runner is not None:
                runner.shutdown()  # the engine's worker process must not outlive the replica

    return ScoringService


@serve.deployment(name="BackwardModel")
class BackwardModel:
    """The backward model (M_yx) when it is not the current model: its own replicas."""

    def __init__(self, config: dict, device: str, resources: dict):
        self.runner = ModelRunner(
            ServeConfig.model_validate(config),
            role="backward",
            device=device,
            resources=ServeResources.model_validate(resources),
        )

    async def check_health(self) -> None:
        self.runner.check_health()

    async def info(self) -> dict[str, Any]:
        self.runner.ensure_watcher()
        return {**self.runner.info(), "role": "backward"}

    async def backtranslate(self, rows: list[dict[str, Any]]):
        self.runner.ensure_watcher()
        return await self.runner.backtranslate(rows)

    def __del__(self):
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.shutdown()


def deployment_options(resources: ServeResources, env: dict[str, str]) -> dict[str, Any]:
    """Serve deployment options from the profile's ``serve`` section."""
    autoscaling: dict[str, Any] = {
        "min_replicas": resources.min_replicas,
        "max_replicas": resources.max_replicas,
        "target_ongoing_requests": resources.target_ongoing_requests,
    }
    if resources.min_replicas == 0:
        autoscaling["initial_replicas"] = 1  # serve the first requests without a cold start
    return {
        "autoscaling_config": autoscaling,
        "max_ongoing_requests": resources.max_ongoing_requests,
        "ray_actor_options": {
            "num_cpus": resources.cpus_per_replica,
            "num_gpus": resources.gpus_per_replica,
            "runtime_env": {"env_vars": env},
        },
        # An engine starts in tens of seconds; Serve's default health-check timeout
        # would otherwise mark a replica that is busy with a long batch as unhealthy.
        "health_check_timeout_s": 60,
    }


def _replica_env(
    config: ServeConfig, resources: ServeResources, profile: ResourceProfile
) -> dict[str, str]:
    return engine_env(engine_spec(config, resources, profile.device, ""))


def build_app(args: dict[str, Any] | ServeConfig) -> serve.Application:
    """Ray Serve application builder (``import_path: selfalign.serving.app:build_app``).

    ``args`` holds ``ServeConfig`` fields (``model``, ``backward_model``, ``model_pointer``,
    ``profile``, ``vllm``, ``limits``...); the replicas' resources come from the profile's
    ``serve`` section of ``ray_config.yaml``. The bearer token is resolved here (config,
    else ``$SELFALIGN_SERVE_TOKEN``): without one, and without ``open: true``, the
    application refuses to build.
    """
    config = args if isinstance(args, ServeConfig) else build_config(ServeConfig, None, args or {})
    profile = load_ray_config(config.ray_config).profile(config.profile)
    resources = profile.serve
    token = guard.resolve_token(config.token, config.open)
    # The token lives in the guard only; replicas get the config without it.
    replica_config = config.model_copy(update={"token": None}).model_dump(mode="json")
    options = deployment_options(resources, _replica_env(config, resources, profile))
    backward = None
    if config.backward_model or config.backward_pointer:
        backward = BackwardModel.options(**options).bind(
            replica_config, profile.device, resources.model_dump()
        )
    service = service_deployment(make_api(token, config.limits))
    return service.options(**options).bind(
        replica_config, profile.device, resources.model_dump(), backward
    )


def run_service(config: ServeConfig, *, block: bool = True) -> str:
    """Start (or join) Ray, start Serve's HTTP proxy and deploy; returns the base URL.

    With ``block``, waits for SIGINT/SIGTERM and then deletes the application.
    """
    from selfalign.core.cluster import ensure_ray

    profile = load_ray_config(config.ray_config).profile(config.profile)
    ensure_ray(profile, config.ray_address)
    serve.start(http_options={"host": config.host, "port": config.port})
    app = build_app(config)
    serve.run(app, name=config.app_name, route_prefix=config.route_prefix, blocking=False)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    url = f"http://{host}:{config.port}{config.route_prefix.rstrip('/')}"
    log.info("serving %s at %s", config.model, url)
    if block:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(f"selfalign serve: {url} (Ctrl-C to stop)", flush=True)
        while not stop.wait(1.0):
            pass
        serve.delete(config.app_name)
    return url
