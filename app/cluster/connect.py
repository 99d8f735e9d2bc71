"""Join a Ray cluster, deploy the generation replicas on it, and say which workers it has.

``launch.py --ray auto`` joins the cluster that ``ray start --head`` started on this machine;
``--ray ray://host:10001`` one elsewhere (Ray Client). One replica per GPU of the cluster (``num_gpus=1``);
on a cluster without GPUs, ``--ray-replicas`` replicas of ``--ray-cpus-per-replica`` CPUs each.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray import serve

from app.cluster.deployment import deployment
from app.cluster.remote_worker import ClusterGeneration
from app.engine.config import EngineConfig

log = logging.getLogger(__name__)

APP_NAME = "lora-studio"


@dataclass(frozen=True)
class Placement:
    """How many replicas, and the Ray resources of each."""

    replicas: int
    actor_options: dict[str, Any]
    cpu_threads: int | None = None  # torch threads of a CPU replica; None: torch's default

    def describe(self) -> str:
        return f"{self.replicas} replica(s), each with {self.actor_options}"


def connect(address: str) -> None:
    """Join the cluster at ``address`` ("auto", "ray://host:10001", or "local": a new one-machine instance)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never report to the internet from here
    ray.init(address=None if address == "local" else address, include_dashboard=False, ignore_reinit_error=True,
             logging_level=logging.WARNING)


def placement(replicas: int | None, cpus_per_replica: float) -> Placement:
    """One replica per GPU of the cluster; on a CPU-only cluster ``replicas`` (default 1) of
    ``cpus_per_replica`` CPUs each."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return Placement(replicas or gpus, {"num_gpus": 1})
    return Placement(replicas or 1, {"num_cpus": cpus_per_replica}, max(1, round(cpus_per_replica)))


def deploy(config: EngineConfig, where: Placement) -> Any:
    """Start the deployment; return its handle. No HTTP proxy: only this process calls it. One left by an
    earlier run is deleted first, not updated: an update keeps the old replicas until the new ones run,
    which a cluster whose resources the old ones hold can never place."""
    serve.start(proxy_location="Disabled")
    if APP_NAME in serve.status().applications:
        log.info("deleting the Ray Serve application %s left by an earlier run", APP_NAME)
        serve.delete(APP_NAME)
    return serve.run(deployment(config, where.replicas, where.actor_options, where.cpu_threads), name=APP_NAME,
                     route_prefix=None)


def stop() -> None:
    """Delete the deployment: its replicas end and give their GPUs back."""
    try:
        serve.delete(APP_NAME)
    except Exception as exc:  # the cluster may be gone already
        log.warning("could not delete the Ray Serve application %s: %s", APP_NAME, exc)


def workers(handle: Any, replicas: int, attempts: int = 5) -> list[dict[str, Any]]:
    """Each replica's name, device and counters: ``replicas`` calls at once, each holding its replica a
    moment, so they reach different replicas (each takes one request at a time)."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(attempts):
        calls = [handle.status.remote(0.3) for _ in range(replicas)]
        for call in calls:
            status = call.result()
            seen[status["worker"]] = status
        if len(seen) >= replicas:
            break
    return sorted(seen.values(), key=lambda status: status["worker"])


def start_cluster(args: argparse.Namespace, config: EngineConfig) -> ClusterGeneration:
    """``--ray``: join, deploy, print the workers; the ClusterGeneration the Engine sends generation to."""
    connect(args.ray)
    where = placement(args.ray_replicas, args.ray_cpus_per_replica)
    log.info("Ray cluster %s: %s; deploying %s", args.ray, ray.cluster_resources(), where.describe())
    # --device names this process's device; a replica given a GPU uses it (auto: CUDA, fp16 by default)
    handle = deploy(replace(config, device="auto") if "num_gpus" in where.actor_options else config, where)
    for status in workers(handle, where.replicas):
        print(f"LoRA Studio worker {status['worker']} on {status['device']}, node {status['node']}", flush=True)
    atexit.register(stop)  # the server does not shut the engine down on exit: free the GPUs anyway
    return ClusterGeneration(handle, where.replicas, config.default_model, on_close=stop)
