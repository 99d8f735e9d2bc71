"""LoRA switching: first use of a LoRA file, switching between cached LoRAs, the naive reload, and the
cost per image of an active LoRA.

    .venv/bin/python bench/lora_swap.py [--arch tiny|sd15] [--size 64] [--steps 20] [--rank 16] [--runs 4]

- ``cold_load_ms``: first use of a LoRA file (disk read, conversion, adapter injection, fuse).
- ``warm_swap_ms``: switching between two LoRAs already cached and resident (median of swaps).
- ``pipeline_reload_ms``: the naive alternative: load the pipeline from disk and apply the LoRA.
- ``swap_vs_reload``: pipeline_reload_ms / warm_swap_ms (target >= 20 on CPU).
- ``lora_step_ratio``: seconds per image with one LoRA active / with none, the same engine
  (target <= 1.05 on CPU, <= 1.03 on a GPU). Jobs run in blocks of the same kind, and the first
  job of a block (the one that pays the swap) is not counted.
- ``resident_adapter_overhead``: seconds per image with no LoRA while adapters stay resident / after
  they are unloaded (what keeping them loaded costs the base model).

``--arch sd15`` builds an SD 1.5-architecture pipeline with random weights from the shipped config
(the GPU benchmark of the LoRA issue: rank-16 LoRAs on all attention and MLP layers). Prints the
figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch
from diffusers import DiffusionPipeline
from safetensors.torch import save_file

from app.engine import Engine, EngineConfig, Job, JobResult, Txt2ImgRequest
from app.engine.lora_keys import kohya_unet_name
from app.engine.lora_runtime import ActiveLora
from app.engine.placeholder import ensure_placeholder_model
from random_sd15 import build_sd15

UNET_PARTS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
              "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--size", type=int, default=None, help="default 64 (tiny) or 512 (sd15)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--runs", type=int, default=4, help="blocks of each kind for the step ratio")
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    return parser.parse_args()


def write_lora(unet: torch.nn.Module, path: Path, rank: int, seed: int) -> int:
    """A kohya LoRA of ``rank`` on every attention and MLP Linear of the UNet; returns its layer count."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module_path, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and module_path.endswith(UNET_PARTS):
            name = kohya_unet_name(module_path, "sd1", unet.config.layers_per_block)
            tensors[f"{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.01
            tensors[f"{name}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=generator) * 0.01
            tensors[f"{name}.alpha"] = torch.tensor(rank / 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_base_model_version": "sd_v1", "ss_network_dim": str(rank)})
    return len(tensors) // 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1000


def on_worker(engine: Engine, fn):
    """``fn()`` run as a job on the engine's worker thread, where jobs load models and switch LoRAs
    (another thread that computes would compete with the worker's OpenMP threads on a small CPU)."""
    job = Job("bench", lambda ctx: JobResult(info={"value": fn()}), description="bench")
    return engine.worker.submit(job).wait(600).info["value"]


def timed_on_worker_ms(engine: Engine, fn, device: torch.device) -> float:
    """Milliseconds of ``fn`` on the engine's worker thread (``on_worker``)."""
    return on_worker(engine, lambda: timed_ms(fn, device))


def seconds_per_image(engine: Engine, prompt: str, args: argparse.Namespace, size: int, blocks: int) -> list[float]:
    """Per-image seconds of jobs 2..3 of ``blocks`` blocks of three jobs (job 1 of a block may swap)."""
    times = []
    for _ in range(blocks):
        for index in range(3):
            start = time.perf_counter()
            engine.generate(Txt2ImgRequest(prompt=prompt, seed=7, width=size, height=size, steps=args.steps,
                                           sampler="Euler", save=False))
            if index:
                times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-lora-"))
    models_dir = workdir / "models"
    probe = EngineConfig(models_dir=models_dir, device=args.device, dtype=args.dtype)
    device, dtype = probe.resolved_device(), probe.resolved_dtype()
    size = args.size or (512 if args.arch == "sd15" else 64)
    model = build_sd15(models_dir, dtype) if args.arch == "sd15" else ensure_placeholder_model(models_dir)
    engine = Engine(EngineConfig(models_dir=models_dir, outputs_dir=workdir / "outputs", default_model=model,
                                 device=args.device, dtype=args.dtype, preview_every=0))
    loaded = engine.manager.get(model)
    adapters = loaded.adapters
    assert adapters is not None
    paths = [models_dir / "Lora" / f"bench-{i}.safetensors" for i in range(2)]
    layers = [write_lora(loaded.txt2img.unet, path, args.rank, seed=i) for i, path in enumerate(paths)]
    loras = [ActiveLora(p.stem, p, engine.registry.lora_info(p), 1.0) for p in paths]
    seconds_per_image(engine, "warm up", args, size, 1)

    cold = [timed_on_worker_ms(engine, lambda lora=lora: adapters.activate([lora]), device) for lora in loras]
    warm = [timed_on_worker_ms(engine, lambda i=i: adapters.activate([loras[i % 2]]), device)
            for i in range(args.swaps)]
    adapters.activate([])
    assert adapters.loads == 2, "a warm swap must not load anything"

    def reload_and_apply() -> None:
        pipe = DiffusionPipeline.from_pretrained(loaded.entry.path, torch_dtype=dtype, local_files_only=True,
                                                 safety_checker=None).to(device)
        pipe.load_lora_weights(str(paths[0]), adapter_name="naive")
        pipe.set_adapters(["naive"], [1.0])

    reload = [timed_on_worker_ms(engine, reload_and_apply, device) for _ in range(2)]

    base_times, lora_times = [], []
    for _ in range(args.runs):
        base_times += seconds_per_image(engine, "a red circle", args, size, 1)
        lora_times += seconds_per_image(engine, "a red circle <lora:bench-0:1>", args, size, 1)
    adapters.activate([])
    loaded.txt2img.unload_lora_weights()  # no wrappers left: the pristine base, for the resident-adapter cost
    pristine_times = seconds_per_image(engine, "a red circle", args, size, args.runs)

    warm_ms = statistics.median(warm)
    reload_ms = statistics.median(reload)
    base_s, lora_s, pristine_s = (statistics.median(t) for t in (base_times, lora_times, pristine_times))
    result = {
        "arch": args.arch, "device": str(device), "dtype": str(dtype), "size": size, "steps": args.steps,
        "rank": args.rank, "lora_layers": layers[0],
        "cold_load_ms": round(statistics.mean(cold), 1), "warm_swap_ms": round(warm_ms, 2),
        "pipeline_reload_ms": round(reload_ms, 1), "swap_vs_reload": round(reload_ms / warm_ms, 1),
        "s_per_image_base": round(base_s, 4), "s_per_image_lora": round(lora_s, 4),
        "lora_step_ratio": round(lora_s / base_s, 4), "resident_adapter_overhead": round(base_s / pristine_s, 4),
    }
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name()
    print(f"{args.arch} on {device} ({dtype}), {size}px, {args.steps} steps, rank {args.rank} on {layers[0]} layers")
    print(f"cold load {result['cold_load_ms']} ms, warm swap {result['warm_swap_ms']} ms, "
          f"reload+apply {result['pipeline_reload_ms']} ms -> swap_vs_reload {result['swap_vs_reload']}")
    print(f"per image: base {base_s:.3f} s, LoRA {lora_s:.3f} s -> lora_step_ratio {result['lora_step_ratio']}; "
          f"pristine {pristine_s:.3f} s -> resident_adapter_overhead {result['resident_adapter_overhead']}")
    engine.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
