"""One model slot of the service (the current or the backward model) over a vLLM async engine.

Each ``ModelRunner`` owns one ``vllm`` v1 ``AsyncLLM``. Every pair of every request is
its own engine request, so pairs from concurrent HTTP requests are continuously batched
by the engine. What a request means is decided by ``selfalign.serving.rows`` (pure).

Model updates (in-place, pointer-driven): a pipeline calls
``selfalign.core.pointers.publish_model(run_dir, model_path)``; the runner polls the
pointer, builds the new engine beside the old one in a worker thread while the old one
keeps serving, swaps, lets requests that started on the old engine finish
(``drain_timeout_s``), then shuts it down.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from selfalign.core import pointers
from selfalign.core.models import content_id, resolve_model
from selfalign.core.resources import ServeResources, StageResources
from selfalign.engine.processor import EngineSpec, engine_env, engine_kwargs, render_chat
from selfalign.serving import rows as serving_rows
from selfalign.serving.config import ServeConfig

log = logging.getLogger(__name__)


class EngineUnavailable(Exception):
    """The engine process died; the replica's health check fails and Serve replaces it."""


@dataclass
class LoadedModel:
    ref: str
    path: str
    version: str
    role: str
    engine: Any
    score_prefix: str
    scorer_format: str
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
        pointer = pointers.read_pointer(self.pointer) if self.pointer else None
        if pointer is None:
            self.current = self._load(self.initial_ref, None, None)
        else:
            self.current = self._load(
                pointer["model"], pointer.get("scorer_format"), pointers.pointer_key(pointer)
            )

    # ------------------------------------------------------------------ loading

    def _load(self, ref: str, scorer_format: str | None, key: str | None) -> LoadedModel:
        """Resolve, fingerprint and start an engine (blocking: run it off the event loop)."""
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from selfalign.stages.curate.stage import detect_score_prefix

        resolved = resolve_model(ref)
        version = content_id(resolved.path)
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
            scorer_format=scorer_format or self.config.scorer_format,
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
        pointer = await asyncio.to_thread(pointers.read_pointer, self.pointer)
        if pointer is None:
            return False
        key = pointers.pointer_key(pointer)
        if key in (self.current.pointer_key, self._failed_key):
            return False
        return await self.switch(pointer["model"], pointer.get("scorer_format"), key)

    async def switch(
        self, ref: str, scorer_format: str | None = None, key: str | None = None
    ) -> bool:
        """Load ``ref`` beside the serving engine, swap, then retire the old engine once
        its requests are done. Requests never see a half-switched runner: each takes the
        current model once, at its start."""
        async with self._switch_lock:
            try:
                new = await asyncio.to_thread(self._load, ref, scorer_format, key)
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
            return serving_rows.engine_row(request, error=f"{type(err).__name__}: {err}")
        completion = final.outputs[0]
        return serving_rows.engine_row(
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
                serving_rows.score_request(
                    row,
                    mode=mode,
                    scorer_format=model.scorer_format,
                    score_prefix=model.score_prefix,
                    render_chat=render,
                    sampling_defaults=sampling,
                    logprobs_top_k=self.config.logprobs_top_k,
                )
                for row in rows
            ]
            done = await serving_rows.run_rows(requests, functools.partial(self._generate, model))
            results = [
                serving_rows.finish_score(r, mode=mode, logprobs_top_k=self.config.logprobs_top_k)
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
                serving_rows.backtranslate_request(
                    row, render_chat=render, sampling_defaults=sampling
                )
                for row in rows
            ]
            done = await serving_rows.run_rows(requests, functools.partial(self._generate, model))
            return [serving_rows.finish_backtranslate(r) for r in done], {
                **model.info(),
                "role": "backward",
            }
        finally:
            model.active -= 1
