"""Joining or starting a Ray cluster."""

from __future__ import annotations

import logging
import os

from selfalign.core.resources import ResourceProfile

log = logging.getLogger(__name__)


def ensure_ray(profile: ResourceProfile, address: str | None = None) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``); else start a local cluster sized by the profile.

    Under ``ray job submit`` the driver inherits ``RAY_ADDRESS`` and joins the cluster.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    kwargs: dict = {"include_dashboard": False, "log_to_driver": True}
    if profile.ray_init.num_cpus:
        kwargs["num_cpus"] = profile.ray_init.num_cpus
    if profile.ray_init.object_store_memory_gb:
        kwargs["object_store_memory"] = int(profile.ray_init.object_store_memory_gb * 2**30)
    log.info("starting a local Ray cluster: %s", kwargs)
    ray.init(**kwargs)
