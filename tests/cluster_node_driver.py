"""The UI process of test_cluster_nodes.py's two-machine cluster, run inside the head's network namespace
(``ip netns exec``): it joins the cluster and deploys with launch.py's own ``start_cluster`` (one replica
per GPU: each node declares one), runs four jobs of two owners through an Engine, saves them, and prints
one JSON line: which node each replica is on, and which worker ran each job with its saved file."""

from __future__ import annotations

import app  # noqa: F401  (before diffusers: torchvision's operators, see app/torchvision_operators.py)

import argparse
import json
from pathlib import Path

from ray import serve

from app.cluster.connect import start_cluster, workers
from app.engine import Engine, EngineConfig, Txt2ImgRequest

REPLICAS = 2
SEEDS_AND_OWNERS = [(31, "alice"), (32, "bob"), (33, "alice"), (34, "bob")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--models-dir", type=Path, required=True)
    parser.add_argument("--outputs-dir", type=Path, required=True)
    args = parser.parse_args()

    config = EngineConfig(models_dir=args.models_dir, outputs_dir=args.outputs_dir, default_model="tiny-sd1",
                          device="cpu", preview_every=1, max_resident_models=1)
    remote = start_cluster(argparse.Namespace(ray=args.address, ray_replicas=None, ray_cpus_per_replica=1.0), config)
    try:
        assert remote.replicas == REPLICAS, remote.replicas  # one per GPU of the cluster
        replicas = {status["worker"]: status["node"] for status in workers(remote.handle, REPLICAS, attempts=10)}
        engine = Engine(config, remote=remote)
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
