"""Shared fixtures. Integration tests use one real local Ray cluster per session."""

from __future__ import annotations

import os

import pytest

# Tests must never reach a model hub; everything they load is embedded or built here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster for the whole session (started once, ~10 s)."""
    import ray

    if not ray.is_initialized():
        # 4 logical CPUs on a 2-core machine: the engine actor, Ray Data's small
        # tasks and (later) Serve/Train actors must fit at once.
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """The tiny random Llama (real tokenizer and chat template), built once and cached."""
    from selfalign.core.models import resolve_model

    return resolve_model("embedded:tiny-random-llama").path


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from selfalign.core.models import resolve_model

    return resolve_model("embedded:smollm2-135m-instruct").path
