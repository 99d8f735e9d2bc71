"""The UI process of test_cluster_nodes.py's two-machine cluster, run inside the head's network namespace
(``ip netns exec``): it joins the cluster as ``launch.py --ray ADDRESS`` does, deploys two replicas of
one CPU each (one per node), runs four jobs of two owners through an Engine, saves them, and prints one
JSON line: which node each replica is on, and which worker ran each job with its saved file."""

from __future__ import annotations

import app  # noqa: F401  (before diffusers: torchvision's operators, see app/torchvision_operators.py)

import argparse
import json
from pathlib import Path

from ray import serve

from app.cluster.connect import Placement, connect, deploy, workers
from app.cluster.remote_worker import ClusterGeneration
from app.engine import Engine, EngineConfig, Txt2ImgRequest

REPLICAS = 2
SEEDS_AND_OWNERS = [(31, "alice"), (32, "bob"), (33, "alice"), (34, "bob")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--outputs-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, required=True, help="torch threads of each replica")
    args = parser.parse_args()

    connect(args.address)
    config = EngineConfig(models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model="tiny-sd1",
                          device="cpu", preview_every=1, max_resident_models=1)
    handle = deploy(config, Placement(REPLICAS, {"num_cpus": 1}, cpu_threads=args.threads))
    try:
        replicas = {status["worker"]: status["node"] for status in workers(handle, REPLICAS, attempts=10)}
        engine = Engine(config, remote=ClusterGeneration(handle, REPLICAS, "tiny-sd1"))
        try:
            jobs = [engine.submit(Txt2ImgRequest(prompt=f"a blue square {seed}", seed=seed, width=64, height=64,
                                                 steps=4), owner=owner, user=owner)
                    for seed, owner in SEEDS_AND_OWNERS]
            results = [job.wait(300) for job in jobs]
        finally:
            engine.shutdown()
        ran = [{"seed": result.seeds[0], "prompt": f"a blue square {result.seeds[0]}",
                "worker": result.info["worker"].split(" ")[0], "path": str(result.paths[0])} for result in results]
        print(json.dumps({"replicas": replicas, "jobs": ran}), flush=True)
    finally:
        serve.shutdown()


if __name__ == "__main__":
    main()
