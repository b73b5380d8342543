"""The scoring service on Ray Serve: a FastAPI ingress whose replicas each hold a vLLM engine.

Each replica of ``ScoringService`` owns one ``vllm.AsyncLLMEngine`` (v1 ``AsyncLLM``).
Every pair of every request becomes its own engine request, so pairs from concurrent
HTTP requests are continuously batched by the engine rather than served one by one.
What a request means is decided by ``selfalign.serving`` (pure) with the curate and
backtranslate stages' own functions; this module only adapts it to Serve and vLLM.

Model updates (in-place, pointer-driven): the loop calls
``selfalign.serving.publish_model(run_dir, model_path)``; each replica polls the pointer
(``model_pointer``), builds the new engine beside the old one in a worker thread while
the old one keeps serving, swaps, lets requests that started on the old engine finish
(``drain_timeout_s``), then shuts it down. A pointer rather than a Serve redeploy: under
a KubeRay RayService the operator owns the Serve config and would revert a redeploy made
by the loop, whereas a pointer works the same on a laptop and on a cluster. (Redeploying
with a new ``model`` argument also works: Serve replaces replicas gracefully.) On a GPU,
two engines share the replica's GPU during a switch: keep ``vllm.gpu_memory_utilization``
below 0.5 where hot switches are needed.

``build_app(args)`` is the application builder a RayService references as
``import_path: selfalign.runtime.serve:build_app``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from selfalign import serving
from selfalign.config import (
    ResourceProfile,
    ServeConfig,
    ServeResources,
    StageResources,
    build_config,
    load_ray_config,
)
from selfalign.runtime.engine import EngineSpec, engine_env, engine_kwargs, render_chat

log = logging.getLogger(__name__)

ROUTES = ("/v1/score", "/v1/backtranslate", "/v1/models", "/healthz", "/openapi.json")
_LATENCY_BOUNDARIES = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256]


class EngineUnavailable(Exception):
    """The engine process died; the replica's health check fails and Serve replaces it."""


# --------------------------------------------------------------------------- engine


@dataclass
class LoadedModel:
    ref: str
    path: str
    version: str
    role: str
    engine: Any
    score_prefix: str
    scorer_recipe: str
    pointer_key: str | None
    loaded_at: float
    active: int = 0

    def info(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "version": self.version,
            "role": self.role,
            "loaded_at": self.loaded_at,
        }


def engine_spec(
    config: ServeConfig, resources: ServeResources, device: str, path: str
) -> EngineSpec:
    """The batch stages' EngineSpec for a replica: same engine kwargs, same environment."""
    stage = StageResources(
        cpus_per_actor=resources.cpus_per_replica,
        gpus_per_actor=resources.gpus_per_replica,
        omp_threads=resources.omp_threads,
    )
    return EngineSpec(
        model_path=path,
        resources=stage,
        vllm=config.vllm,
        sampling=config.scoring_sampling,
        device=device,
        operation="logprobs",
        logprobs_top_k=config.logprobs_top_k,
    )


def _logprob_dicts(logprobs: Any) -> list[dict[int, dict[str, Any]]] | None:
    # vLLM's Logprob objects -> the plain dicts Ray Data's vLLM stage produces.
    if logprobs is None:
        return None
    out = []
    for position in logprobs:
        out.append(
            {
                int(token_id): {
                    "logprob": float(lp.logprob),
                    "rank": lp.rank,
                    "decoded_token": lp.decoded_token,
                }
                for token_id, lp in (position or {}).items()
            }
        )
    return out


class ModelRunner:
    """One model slot (the current or the backward model) over a vLLM async engine.

    Used by the Serve replicas and, directly, by the in-process benchmark baseline.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        role: str = "current",
        device: str = "cpu",
        resources: ServeResources | None = None,
    ):
        self.config = config
        self.role = role
        self.device = device
        self.resources = resources or ServeResources()
        if role == "current":
            self.initial_ref, self.pointer = config.model, config.model_pointer
        else:
            self.initial_ref = config.backward_model or config.model
            self.pointer = config.backward_pointer
        self._switch_lock = asyncio.Lock()
        self._watcher: asyncio.Task | None = None
        self._failed_key: str | None = None
        self._retiring: set[asyncio.Task] = set()
        # A published model, when there is one, wins over the configured start model: a
        # replica started (or restarted by Serve) mid-loop serves what the loop published.
        pointer = serving.read_pointer(self.pointer) if self.pointer else None
        if pointer is None:
            self.current = self._load(self.initial_ref, None, None)
        else:
            self.current = self._load(
                pointer["model"], pointer.get("scorer_recipe"), serving.pointer_key(pointer)
            )

    # ------------------------------------------------------------------ loading

    def _load(self, ref: str, scorer_recipe: str | None, key: str | None) -> LoadedModel:
        """Resolve, fingerprint and start an engine (blocking: run it off the event loop)."""
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from selfalign.commands.curate import detect_score_prefix
        from selfalign.models import resolve_model

        resolved = resolve_model(ref)
        version = serving.content_id(resolved.path)
        spec = engine_spec(self.config, self.resources, self.device, resolved.path)
        # The same thread/KV-cache settings the batch stages give their engine actors;
        # the engine's worker process inherits them when it starts.
        os.environ.update(engine_env(spec))
        started = time.time()
        engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(model=resolved.path, **engine_kwargs(spec))
        )
        prefix = self.config.score_prefix or detect_score_prefix(resolved.path)
        log.info("%s model %s (%s) ready in %.1f s", self.role, ref, version, time.time() - started)
        return LoadedModel(
            ref=ref,
            path=resolved.path,
            version=version,
            role=self.role,
            engine=engine,
            score_prefix=prefix,
            scorer_recipe=scorer_recipe or self.config.scorer_recipe,
            pointer_key=key,
            loaded_at=time.time(),
        )

    def info(self) -> dict[str, Any]:
        return self.current.info()

    def check_health(self) -> None:
        if self.current.engine.errored:
            raise EngineUnavailable(f"engine of {self.current.ref} is dead")
        self.ensure_watcher()

    # ------------------------------------------------------------------ switching

    def ensure_watcher(self) -> None:
        """Start polling the pointer on the running loop (the replica's request loop)."""
        if self.pointer and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                await self.poll_pointer()
            except Exception:  # noqa: BLE001 - a bad publish must never stop the watcher
                log.exception("model pointer check failed")
            await asyncio.sleep(self.config.poll_interval_s)

    async def poll_pointer(self) -> bool:
        """Switch if the pointer names a new publish; True when a switch happened."""
        pointer = await asyncio.to_thread(serving.read_pointer, self.pointer)
        if pointer is None:
            return False
        key = serving.pointer_key(pointer)
        if key in (self.current.pointer_key, self._failed_key):
            return False
        return await self.switch(pointer["model"], pointer.get("scorer_recipe"), key)

    async def switch(
        self, ref: str, scorer_recipe: str | None = None, key: str | None = None
    ) -> bool:
        """Load ``ref`` beside the serving engine, swap, then retire the old engine once
        its requests are done. Requests never see a half-switched runner: each takes the
        current model once, at its start."""
        async with self._switch_lock:
            try:
                new = await asyncio.to_thread(self._load, ref, scorer_recipe, key)
            except Exception:  # noqa: BLE001 - keep serving the old model
                log.exception("could not load %s; still serving %s", ref, self.current.ref)
                self._failed_key = key
                return False
            old, self.current = self.current, new
            task = asyncio.get_running_loop().create_task(self._retire(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("switched %s model: %s -> %s", self.role, old.version, new.version)
            return True

    async def _retire(self, old: LoadedModel) -> None:
        deadline = time.monotonic() + self.config.drain_timeout_s
        while old.active and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if old.active:
            log.warning("%d requests still on %s after the drain timeout", old.active, old.ref)
        await asyncio.to_thread(old.engine.shutdown)

    async def drain(self) -> None:
        """Wait for retiring engines (tests, benchmark, shutdown)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def shutdown(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.current.engine.shutdown()

    # ------------------------------------------------------------------ requests

    async def _generate(self, model: LoadedModel, request: dict[str, Any]) -> dict[str, Any]:
        """One engine request -> engine row. A per-row failure (e.g. a prompt longer than
        the context) is the row's error, as in the batch stage; a dead engine is not."""
        from vllm import SamplingParams
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = SamplingParams(**request["sampling_params"])
            final = None
            async for output in model.engine.generate(
                {"prompt": request["prompt"]}, params, uuid.uuid4().hex
            ):
                final = output
            if final is None:
                raise RuntimeError("the engine returned no output")
        except EngineDeadError as err:
            raise EngineUnavailable(str(err) or "engine dead") from err
        except Exception as err:  # noqa: BLE001 - recorded as this row's engine error
            if model.engine.errored:
                raise EngineUnavailable(f"engine of {model.ref} died: {err}") from err
            return serving.engine_row(request, error=f"{type(err).__name__}: {err}")
        completion = final.outputs[0]
        return serving.engine_row(
            request,
            generated_text=completion.text,
            num_input_tokens=len(final.prompt_token_ids or ()),
            num_generated_tokens=len(completion.token_ids),
            logprobs=_logprob_dicts(completion.logprobs),
        )

    async def score(
        self, rows: list[dict[str, Any]], mode: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        model = self.current
        model.active += 1
        try:
            render = functools.partial(render_chat, model.path)
            sampling = self.config.scoring_sampling.model_dump()
            requests = [
                serving.score_request(
                    row,
                    mode=mode,
                    scorer_recipe=model.scorer_recipe,
                    score_prefix=model.score_prefix,
                    render_chat=render,
                    sampling_defaults=sampling,
                    logprobs_top_k=self.config.logprobs_top_k,
                )
                for row in rows
            ]
            done = await serving.run_rows(requests, functools.partial(self._generate, model))
            results = [
                serving.finish_score(r, mode=mode, logprobs_top_k=self.config.logprobs_top_k)
                for r in done
            ]
            return results, model.info()
        finally:
            model.active -= 1

    async def backtranslate(
        self, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        model = self.current
        model.active += 1
        try:
            render = functools.partial(render_chat, model.path)
            sampling = self.config.backtranslate_sampling.model_dump()
            requests = [
                serving.backtranslate_request(row, render_chat=render, sampling_defaults=sampling)
                for row in rows
            ]
            done = await serving.run_rows(requests, functools.partial(self._generate, model))
            return [serving.finish_backtranslate(r) for r in done], {
                **model.info(),
                "role": "backward",
            }
        finally:
            model.active -= 1


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
        path = serving.relative_path(scope)
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
        return _error(422, "invalid request", serving.validation_message(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(_request, exc: StarletteHTTPException):
        # FastAPI answers 400 for a body it could not decode at all (a number beyond
        # Python's digit limit, nesting too deep): that is a malformed body, like bad JSON.
        if exc.status_code == 400:
            return _error(422, "invalid request", f"malformed JSON body: {exc.detail}")
        return _error(exc.status_code, str(exc.detail))

    @api.exception_handler(serving.ServeError)
    async def _refused(_request, exc: serving.ServeError):
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
        serving.GuardMiddleware, token=token, max_request_bytes=limits.max_request_bytes
    )
    api.add_middleware(MetricsMiddleware)
    return api


_ERRORS = {
    401: {"model": serving.ErrorResponse, "description": "Missing or wrong bearer token."},
    413: {"model": serving.ErrorResponse, "description": "Body, batch or a field too large."},
    422: {"model": serving.ErrorResponse, "description": "Malformed JSON or schema error."},
    503: {"model": serving.ErrorResponse, "description": "The engine is restarting."},
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

        @api.get("/v1/models", response_model=serving.ModelsResponse, responses=_ERRORS)
        async def models(self, response: Response):
            self.runner.ensure_watcher()
            current = self.runner.info()
            if self.backward is not None:
                backward = await self.backward.info.remote()
            else:
                backward = {**current, "role": "backward"}
            _model_header(response, current)
            return {"object": "list", "data": [current, backward]}

        @api.post("/v1/score", response_model=serving.ScoreResponse, responses=_ERRORS)
        async def score(self, body: serving.ScoreRequest, response: Response):
            self.runner.ensure_watcher()
            rows = body.rows()
            serving.check_rows(rows, ("instruction", "response"), self.config.limits)
            _record_batch("/v1/score", len(rows))
            results, info = await self.runner.score(rows, body.mode)
            _model_header(response, info)
            return {"model": info, "mode": body.mode, "results": results}

        @api.post(
            "/v1/backtranslate", response_model=serving.BacktranslateResponse, responses=_ERRORS
        )
        async def backtranslate(self, body: serving.BacktranslateRequest, response: Response):
            self.runner.ensure_watcher()
            rows = body.rows()
            serving.check_rows(rows, ("text",), self.config.limits)
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
    """Ray Serve application builder (``import_path: selfalign.runtime.serve:build_app``).

    ``args`` holds ``ServeConfig`` fields (``model``, ``backward_model``, ``model_pointer``,
    ``profile``, ``vllm``, ``limits``...); the replicas' resources come from the profile's
    ``serve`` section of ``ray_config.yaml``. The bearer token is resolved here (config,
    else ``$SELFALIGN_SERVE_TOKEN``): without one, and without ``open: true``, the
    application refuses to build.
    """
    config = args if isinstance(args, ServeConfig) else build_config(ServeConfig, None, args or {})
    profile = load_ray_config(config.ray_config).profile(config.profile)
    resources = profile.serve
    token = serving.resolve_token(config.token, config.open)
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
    from selfalign.runtime.cluster import ensure_ray

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
