"""Two machines of a Ray cluster, played by two network namespaces of this one joined by a veth pair (the
traffic stays between addresses this module makes): the head runs ``ray start --head`` and the UI process,
the other node joins with ``ray start --address`` as the README says, with Ray's token authentication on.
Jobs of two owners run on both nodes and come back saved in the head's outputs, as a local run saves them.

Skipped without the ``cluster`` extra, or where network namespaces cannot be made (not root, no ``ip``)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from app.engine import Engine, Txt2ImgRequest

HEAD_IP, NODE_IP, PORT = "10.231.0.1", "10.231.0.2", 6391
DRIVER = Path(__file__).with_name("cluster_node_driver.py")
RAY_START_TIMEOUT_S = 180


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def make_namespaces(head: str, node: str) -> None:
    """Two namespaces, a veth pair between them, loopback up in each."""
    ip("netns", "add", head)
    ip("netns", "add", node)
    veth_head, veth_node = f"v{head}", f"v{node}"
    ip("link", "add", veth_head, "type", "veth", "peer", "name", veth_node)
    for namespace, veth, address in ((head, veth_head, HEAD_IP), (node, veth_node, NODE_IP)):
        ip("link", "set", veth, "netns", namespace)
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", veth)
        ip("-n", namespace, "link", "set", veth, "up")
        ip("-n", namespace, "link", "set", "lo", "up")


def remove_namespaces(*names: str) -> None:
    """Kill what runs in each namespace (its Ray processes, whatever ``ray stop`` would miss or, worse, kill
    elsewhere on this machine), then delete it; the veth pair goes with it."""
    for name in names:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture(scope="module")
def two_nodes(ray_to_itself):
    """The head's namespace and the environment every Ray command of the cluster runs with."""
    pytest.importorskip("ray.serve", reason="the cluster extra is not installed (pip install -e .[cluster])")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("two-node cluster: needs root and iproute2 to make network namespaces")
    head, node = f"lsh{os.getpid()}", f"lsn{os.getpid()}"
    scratch = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        try:
            make_namespaces(head, node)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"two-node cluster: cannot make network namespaces here ({exc.stderr.strip()})")
        token = scratch / "auth_token"  # the cluster's token, as copied to every machine; not the user's ~/.ray
        token.write_text(secrets.token_hex(32))
        # OMP_NUM_THREADS: the replicas' torch threads, as many as this process's (a CPU's float sums depend
        # on how they are split), where Ray would give a replica of no CPUs one
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
               "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": str(torch.get_num_threads())}
        ray = str(Path(sys.executable).with_name("ray"))
        # each node declares one GPU (none is there: the replica's "auto" device falls back to the CPU), so
        # launch.py's placement puts one replica on each, as on two machines with one card each
        common = ["--num-cpus", "1", "--num-gpus", "1", "--object-store-memory", str(200 * 2**20),
                  "--disable-usage-stats"]
        subprocess.run(["ip", "netns", "exec", head, ray, "start", "--head", "--node-ip-address", HEAD_IP,
                        "--port", str(PORT), "--include-dashboard=false", "--temp-dir", str(scratch / "h"), *common],
                       check=True, env=env, capture_output=True, timeout=RAY_START_TIMEOUT_S)
        subprocess.run(["ip", "netns", "exec", node, ray, "start", "--address", f"{HEAD_IP}:{PORT}",
                        "--node-ip-address", NODE_IP, "--temp-dir", str(scratch / "n"), *common],
                       check=True, env=env, capture_output=True, timeout=RAY_START_TIMEOUT_S)
        yield head, env
    finally:
        remove_namespaces(head, node)
        shutil.rmtree(scratch, ignore_errors=True)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.mark.slow
def test_jobs_run_on_both_machines_and_are_saved_by_the_ui_process_as_a_local_run(
        two_nodes, models_dir: Path, engine: Engine, tmp_path: Path) -> None:
    head, env = two_nodes
    outputs = tmp_path / "head-outputs"
    run = subprocess.run(["ip", "netns", "exec", head, sys.executable, str(DRIVER), "--address", f"{HEAD_IP}:{PORT}",
                          "--models-dir", str(models_dir), "--outputs-dir", str(outputs)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])
    replicas = report["replicas"]
    assert sorted(replicas.values()) == [HEAD_IP, NODE_IP]  # one replica on each machine
    printed = sorted(line for line in run.stdout.splitlines() if line.startswith("LoRA Studio worker"))
    assert printed == sorted(f"LoRA Studio worker {worker} on cpu, node {node}" for worker, node in replicas.items())
    assert {replicas[job["worker"]] for job in report["jobs"]} == {HEAD_IP, NODE_IP}  # both ran jobs
    for job in report["jobs"]:
        saved = Image.open(job["path"])
        local = engine.generate(Txt2ImgRequest(prompt=job["prompt"], seed=job["seed"], width=64, height=64, steps=4,
                                               save=False))
        assert np.array_equal(pixels(saved), pixels(local.images[0]))
        assert saved.info["parameters"] == local.infotexts[0]
    for owner, seeds in (("alice", (31, 33)), ("bob", (32, 34))):
        names = sorted(path.name for path in (outputs / owner).rglob("*") if path.is_file())
        assert names == [f"00000-{seeds[0]}.png", f"00001-{seeds[1]}.png"]
