"""REST API overhead: the same txt2img through ``POST /sdapi/v1/txt2img`` (HTTP, JSON, base64 PNGs,
the worker's queue) and as a direct engine call, alternated in one run on one engine.

    .venv/bin/python bench/api_overhead.py [--runs 7] [--steps 20] [--size 64]

The app (API and UI) is served in this process by uvicorn on a free loopback port, on the bundled
demo model. Prints its figures, then one JSON line. Target: api_over_engine <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests
import torch
import uvicorn

from app.api.context import ApiContext
from app.api.options import OPTIONS_FILE, OptionsStore, default_options
from app.demo import BUNDLED_PATH, DEMO_MODEL
from app.engine import Engine, EngineConfig, Txt2ImgRequest
from app.serving import ServeOptions, use_cache_under
from app.server import build_app
from app.training.job import Training


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_in_thread(engine: Engine, outputs: Path) -> tuple[str, uvicorn.Server]:
    port = free_port()
    options = ServeOptions(port=port)
    context = ApiContext(engine, OptionsStore(outputs / OPTIONS_FILE, default_options(DEMO_MODEL)))
    server = uvicorn.Server(uvicorn.Config(build_app(engine, Training(engine), options, context), host="127.0.0.1",
                                           port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/sdapi/v1/options", timeout=5).status_code == 200:
                return url, server
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError("the app did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    outputs = Path(tempfile.mkdtemp(prefix="api-bench-"))
    use_cache_under(outputs)
    engine = Engine(EngineConfig(models_dir=BUNDLED_PATH.parent.parent, outputs_dir=outputs, default_model=DEMO_MODEL,
                                 device="auto", preview_every=2))
    url, server = serve_in_thread(engine, outputs)
    fields = dict(prompt="a red circle on a blue background", negative_prompt="", seed=5, steps=args.steps,
                  width=args.size, height=args.size, cfg_scale=5.0, sampler_name="Euler a", batch_size=1, n_iter=1)

    def through_api() -> None:
        answer = requests.post(url + "/sdapi/v1/txt2img", json={**fields, "save_images": False}, timeout=600)
        answer.raise_for_status()
        assert len(answer.json()["images"]) == 1

    def direct() -> None:
        request = Txt2ImgRequest(prompt=fields["prompt"], seed=5, steps=args.steps, width=args.size,
                                 height=args.size, cfg_scale=5.0, sampler="Euler a", save=False)
        assert len(engine.generate(request).images) == 1

    through_api(), direct()  # warm-up: model load, first allocations
    seconds: dict[str, list[float]] = {"api": [], "engine": []}
    for _ in range(args.runs):
        for name, run in (("api", through_api), ("engine", direct)):
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    server.should_exit = True
    engine.shutdown()
    api_s, engine_s = statistics.median(seconds["api"]), statistics.median(seconds["engine"])
    print(f"median of {args.runs}: API {api_s:.3f} s, engine {engine_s:.3f} s per {args.size}x{args.size} image, "
          f"{args.steps} steps")
    print(json.dumps({"device": str(engine.manager.device), "torch": torch.__version__, "model": DEMO_MODEL,
                      "size": args.size, "steps": args.steps, "runs": args.runs, "api_s_median": round(api_s, 4),
                      "engine_s_median": round(engine_s, 4), "api_over_engine": round(api_s / engine_s, 4)}))


if __name__ == "__main__":
    main()
