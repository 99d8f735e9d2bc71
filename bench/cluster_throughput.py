"""Generation through a Ray Serve deployment (app.cluster) against the local worker, on this machine.

    .venv/bin/python bench/cluster_throughput.py [--jobs 8] [--size 64] [--steps 10] [--cpus 2] [--threads 1]

Starts a local Ray instance of ``--cpus`` CPUs, then measures: the local engine (its one worker thread);
one replica; two replicas (``--cpus`` shared between them). Every one of them computes with ``--threads``
torch threads, so a job costs the same everywhere and the added latency (one replica's job alone minus the
local worker's, the two alternated so that other load on the machine hits both alike) is Ray's cost alone. For each, ``--jobs`` jobs of two owners are queued at once (images
per second). Two replicas of one thread each can at best double one replica on 2 cores, and the cores are
all this machine has: no more replicas can help (a real cluster scales with one replica per GPU). Needs
the cluster extra. Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch

from app.engine import Engine, EngineConfig, JobFailed, Txt2ImgRequest
from app.engine.placeholder import ensure_placeholder_model


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=None, help="default: a temporary folder with the placeholder")
    parser.add_argument("--model", default=None, help="checkpoint name in models/Stable-diffusion")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each worker (default 1)")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--latency-runs", type=int, default=5)
    return parser.parse_args()


def request(args: argparse.Namespace, seed: int) -> Txt2ImgRequest:
    return Txt2ImgRequest(prompt="a red circle on a blue background", seed=seed, width=args.size, height=args.size,
                          steps=args.steps, save=True)


def measure(engine: Engine, args: argparse.Namespace) -> dict:
    """Images per second for ``--jobs`` queued jobs, errors, workers used."""
    engine.generate(request(args, 0), timeout=600)  # warm: the model loaded where the jobs run
    started = time.perf_counter()
    jobs = [engine.submit(request(args, seed), owner=("alice", "bob")[seed % 2]) for seed in range(1, args.jobs + 1)]
    errors, workers = 0, set()
    for job in jobs:
        try:
            workers.add(job.wait(600).info.get("worker", "local"))
        except JobFailed:
            errors += 1
    seconds = time.perf_counter() - started
    return {"images_per_s": (args.jobs - errors) / seconds, "errors": errors, "workers": len(workers)}


def paired_latency(local: Engine, remote: Engine, args: argparse.Namespace) -> dict:
    """Median milliseconds of one job alone, locally and through Ray, alternated; and of their difference."""
    def timed(engine: Engine, seed: int) -> float:
        begin = time.perf_counter()
        engine.generate(request(args, seed), timeout=600)
        return (time.perf_counter() - begin) * 1000

    pairs = [(timed(local, 100 + run), timed(remote, 100 + run)) for run in range(args.latency_runs)]
    return {"latency_local_ms": statistics.median(a for a, _ in pairs),
            "latency_ray_ms": statistics.median(b for _, b in pairs),
            "added_latency_ms": statistics.median(b - a for a, b in pairs)}


def cluster_engine(config: EngineConfig, replicas: int, cpus: int, threads: int) -> Engine:
    """An engine sending generation to ``replicas`` replicas sharing ``cpus`` CPUs, ``threads`` torch threads each."""
    from app.cluster.connect import Placement, deploy
    from app.cluster.remote_worker import ClusterGeneration

    handle = deploy(config, Placement(replicas, {"num_cpus": cpus / replicas}, threads))
    return Engine(config, remote=ClusterGeneration(handle, replicas, config.default_model))


def main() -> None:
    args = parse_args()
    import ray
    from ray import serve

    from app.cluster.connect import stop

    workdir = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    models_dir = args.models_dir or workdir / "models"
    model = args.model or ensure_placeholder_model(models_dir)
    config = EngineConfig(models_dir=models_dir, outputs_dir=workdir / "outputs", default_model=model, device="cpu",
                          preview_every=2)
    torch.set_num_threads(args.threads)
    local = Engine(config)
    figures = {"local": measure(local, args)}

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    begin = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    start_s = time.perf_counter() - begin
    try:
        for replicas in (1, 2):
            begin = time.perf_counter()
            engine = cluster_engine(config, replicas, args.cpus, args.threads)
            deploy_s = time.perf_counter() - begin
            figures[f"ray_{replicas}"] = {**measure(engine, args), "deploy_s": deploy_s}
            if replicas == 1:
                latency = paired_latency(local, engine, args)
            engine.shutdown()
            stop()  # the next deployment needs the CPUs this one holds
    finally:
        local.shutdown()
        serve.shutdown()
        ray.shutdown()
    result = {
        "images_per_s_local": round(figures["local"]["images_per_s"], 3),
        "images_per_s_1": round(figures["ray_1"]["images_per_s"], 3),
        "images_per_s_2": round(figures["ray_2"]["images_per_s"], 3),
        "replicas_used": figures["ray_2"]["workers"],
        "errors": sum(f["errors"] for f in figures.values()),
        **{key: round(value, 1) for key, value in latency.items()},
        "ray_start_s": round(start_s, 1), "deploy_1_s": round(figures["ray_1"]["deploy_s"], 1),
        "deploy_2_s": round(figures["ray_2"]["deploy_s"], 1),
        "jobs": args.jobs, "size": args.size, "steps": args.steps, "cpus": args.cpus, "threads": args.threads,
        "model": model,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
