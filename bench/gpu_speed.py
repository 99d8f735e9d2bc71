"""GPU speed (issue 23): plain diffusers against LoRA Studio's engine, at its defaults and with the speed
settings, in one process and one run.

    .venv/bin/python bench/gpu_speed.py [--quick] [--compile-mode reduce-overhead] [--deadline-s 420]

- plain: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` as a user writes it: fp16, SDPA (the
  default), Euler a from the scheduler's config, ``pipe(prompt, ...)``; run on a thread of its own, as the
  engine runs on its worker, and the main thread never computes (see ``on_own_thread``).
- engine: ``Engine.generate`` at the engine's defaults (previews every 2 steps, no file written).
- channels_last, fuse_qkv, gpu_rng: the engine with that one setting (gpu_rng: ``--rng gpu``, the noise drawn
  on the GPU as A1111 does by default; other pixels than the engine's default CPU noise).
- fast: the engine with ``compile``, ``channels_last`` and ``fuse_qkv`` (and ``batch_requests=4`` where the
  engine has it); ``compile_s`` is the first job's extra time per shape (batch 1, batch 4).
- it/s is the UNet's denoising loop only: from the start of the first UNet call to the end of the last of a
  job, timed with CUDA events recorded by hooks on the UNet (time.perf_counter on the CPU); ``s_per_image``
  is the whole job (prompt encoding and VAE decode included) divided by its images.
- LoRA: two rank-16 LoRAs on every attention and MLP layer, switched on the fast engine: the switch's time
  and the graphs dynamo compiled while switching among them and none (``recompiles_on_lora_switch``).
- host_syncs: the times one job (b1) made the host wait for the GPU (``torch.cuda.set_sync_debug_mode``);
  ``host_syncs_per_job`` gives plain, engine, gpu_rng and fast for SD 1.5. The engine draws its noise with CPU
  generators (seeds that give the same picture on any machine), so Euler a's per-step noise is copied to
  the GPU at each step, which plain diffusers with a CUDA generator does not do: this count shows its cost,
  and gpu_rng what drawing on the GPU gains.
- batched: 4 queued jobs of 4 owners drawn as one batch, against the same 4 one after another (null when
  the engine has no ``batch_requests``); ``batched_max_pixel_diff`` is the largest 8-bit difference between
  a job's picture drawn alone and in the batch (the issue's fp16 tolerance, stated as a figure).
- xformers: the engine with ``--attention xformers`` (b1, SD 1.5) right after the engine at its default
  SDPA, where CUDA and the xformers extra are there and a child process could run it (else skipped, null);
  ``xformers_vs_sdpa`` is its it/s over the engine's, ``xformers_op`` the forward operator it picked.
- a variant whose jobs fail (say, xformers without kernels for the card) logs its error and the run goes
  on; an error that stops an architecture's phases is in ``errors`` and the next architecture still runs.

SD 1.5 at 512x512 and SDXL at 1024x1024, 20 steps, CFG 7, batch 1 and 4 (SDXL: 1). ``--quick`` runs tiny
models at 64x64 and 4 steps, on the CPU in a couple of minutes: a rehearsal before any GPU time is spent.
Phases past ``--deadline-s`` are skipped (their figures null); on SIGTERM (``timeout``) the run stops and
still prints what it measured. Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import diffusers
import torch
from diffusers import DiffusionPipeline, EulerAncestralDiscreteScheduler

from app.engine import Engine, EngineConfig, JobFailed, Txt2ImgRequest
from app.engine.config import dtype_name
from app.engine.speed import compiled_graphs
from app.engine.tiny import build_tiny_pipeline
from batch_requests import largest_difference, one_after_another, queued_together
from lora_swap import on_worker, timed_on_worker_ms, write_lora
from random_sd15 import build_sd15
from random_sdxl import build_sdxl

PROMPT = "a photograph of an astronaut riding a horse on the moon, highly detailed"
Figures = dict[str, float | None]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models, 64x64, 4 steps (a CPU rehearsal)")
    parser.add_argument("--compile-mode", default="reduce-overhead")
    parser.add_argument("--steps", type=int, default=None, help="default 20 (--quick: 4)")
    parser.add_argument("--runs", type=int, default=None, help="timed jobs per figure (default 3; --quick: 2)")
    parser.add_argument("--no-sdxl", action="store_true")
    parser.add_argument("--no-sd15", action="store_true", help="SDXL alone (a second call when the first ran out of time)")
    parser.add_argument("--deadline-s", type=float, default=None, help="skip phases that start later than this")
    return parser.parse_args()


class LoopTimer:
    """Times a module's calls from hooks: the span from the first call's start to the last call's end."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list = []
        self.handles = [module.register_forward_pre_hook(self._mark), module.register_forward_hook(self._mark)]

    @torch.compiler.disable
    def _mark(self, *_) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def take(self) -> tuple[int, float]:
        """(calls, seconds) since the last take."""
        marks, self.marks = self.marks, []
        if self.cuda:
            marks[-1].synchronize()
            seconds = marks[0].elapsed_time(marks[-1]) / 1000
        else:
            seconds = marks[-1] - marks[0]
        return len(marks) // 2, seconds

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def measure(job: Callable[[], None], timer: LoopTimer, images: int, runs: int, sync: Callable[[], None]) -> Figures:
    """Warm-up job, then ``runs`` jobs: median UNet it/s and seconds per image."""
    job()
    sync()
    timer.take()
    rates, seconds = [], []
    for _ in range(runs):
        start = time.perf_counter()
        job()
        sync()
        seconds.append((time.perf_counter() - start) / images)
        calls, loop_s = timer.take()
        rates.append(calls / loop_s)
    return {"it_s": round(statistics.median(rates), 2), "s_per_image": round(statistics.median(seconds), 4)}


class Cut(Exception):
    """SIGTERM arrived: stop measuring, report what is there."""


def _cut(*_) -> None:
    raise Cut


class Deadline:
    def __init__(self, seconds: float | None) -> None:
        self.start, self.seconds = time.perf_counter(), seconds

    def passed(self, phase: str) -> bool:
        late = self.seconds is not None and time.perf_counter() - self.start > self.seconds
        if late:
            print(f"-- {phase}: skipped (past --deadline-s)", flush=True)
        return late


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.steps = args.steps or (4 if args.quick else 20)
        self.runs = args.runs or (2 if args.quick else 3)
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-speed-"))
        self.models_dir = self.workdir / "models"
        self.deadline = Deadline(args.deadline_s)
        self.has_batching = "batch_requests" in {f.name for f in dataclasses.fields(EngineConfig)}

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.deadline.start:6.1f} s] {text}", flush=True)

    # ----- models ------------------------------------------------------------------------------
    def build(self, arch: str) -> str:
        start = time.perf_counter()
        if self.args.quick:
            name = f"tiny-{arch}"
            build_tiny_pipeline("sdxl" if arch == "sdxl" else "sd1").to(dtype=self.dtype).save_pretrained(
                self.models_dir / "Stable-diffusion" / name)
        elif arch == "sdxl":
            name = build_sdxl(self.models_dir, self.dtype, self.device)
        else:
            name = build_sd15(self.models_dir, self.dtype)
        self.log(f"built {name} in {time.perf_counter() - start:.1f} s")
        return name

    # ----- plain diffusers -----------------------------------------------------------------------
    def plain(self, name: str, size: int, batches: list[int]) -> dict[str, Figures]:
        pipe = DiffusionPipeline.from_pretrained(self.models_dir / "Stable-diffusion" / name, dtype=self.dtype)
        pipe.to(self.device)
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        timer = LoopTimer(pipe.unet, self.device)
        figures = {}
        for batch in batches:
            def job(batch: int = batch) -> None:
                pipe(PROMPT, num_inference_steps=self.steps, guidance_scale=7.0, width=size, height=size,
                     num_images_per_prompt=batch, generator=torch.Generator(self.device).manual_seed(1))
            figures[f"b{batch}"] = measure(job, timer, batch, self.runs, self.sync)
            figures[f"b{batch}"]["host_syncs"] = self.host_syncs(job)
            self.log(f"plain {name} b{batch}: {figures[f'b{batch}']}")
        timer.remove()
        return figures  # the pipeline goes with this frame; the caller frees its memory

    # ----- the engine ----------------------------------------------------------------------------
    def engine(self, name: str, **settings) -> Engine:
        return Engine(EngineConfig(models_dir=self.models_dir, outputs_dir=self.workdir / "outputs",
                                   default_model=name, device=self.device.type, dtype=dtype_name(self.dtype),
                                   **settings))

    def request(self, size: int, batch: int = 1, seed: int = 1, prompt: str = PROMPT) -> Txt2ImgRequest:
        return Txt2ImgRequest(prompt=prompt, steps=self.steps, cfg_scale=7.0, sampler="Euler a", width=size,
                              height=size, batch_size=batch, seed=seed, save=False)

    def engine_figures(self, engine: Engine, name: str, size: int, batches: list[int], label: str,
                       compile_s: dict | None = None) -> dict[str, Figures]:
        timer = LoopTimer(on_worker(engine, lambda: engine.manager.get(name).txt2img.unet), self.device)
        figures = {}
        for batch in batches:
            def job(batch: int = batch) -> None:
                engine.generate(self.request(size, batch))

            if compile_s is not None:  # the first job of a shape compiles: its extra time against a warm job
                first, warm = self.timed(job), self.timed(job)
                compile_s[f"b{batch}"] = round(first - warm, 1)
            figures[f"b{batch}"] = measure(job, timer, batch, self.runs, self.sync)
            figures[f"b{batch}"]["host_syncs"] = self.host_syncs(job)
            self.log(f"{label} {name} b{batch}: {figures[f'b{batch}']}"
                     + (f", compile {compile_s[f'b{batch}']} s" if compile_s is not None else ""))
        timer.remove()
        return figures

    def variant(self, label: str, name: str, size: int, batches: list[int], settings: dict) -> dict:
        """The engine with ``settings``: its figures, or the error that stopped it (the run goes on)."""
        engine = self.engine(name, **settings)
        try:
            return self.engine_figures(engine, name, size, batches, label)
        except (JobFailed, ValueError) as exc:
            self.log(f"{label}: failed: {exc}")
            return {"error": str(exc)}
        finally:
            engine.shutdown()
            engine.manager.unload_all()

    def xformers(self, out: dict, name: str, size: int) -> None:
        """The engine with xformers' attention (b1), measured right after the engine at its default SDPA:
        CUDA only, and only where the xformers extra is installed and imports. ``xformers_op`` is the
        forward operator xformers picks for SD 1.5's self-attention at 512x512: without the flash_attn
        package, xformers' "flash" operator calls PyTorch's own flash kernel, the one SDPA picks too."""
        if self.deadline.passed("xformers"):
            return
        if self.device.type != "cuda" or importlib.util.find_spec("xformers") is None:
            self.log(f"xformers: skipped ({'needs CUDA' if self.device.type != 'cuda' else 'not installed'})")
            return
        failure, op = _probe_xformers()
        if failure:
            self.log(f"xformers: skipped ({failure})")
            return
        out["xformers_op"] = op
        self.log(f"xformers forward operator: {op}")
        out["xformers"] = self.variant("xformers", name, size, [1], {"attention": "xformers"})

    def host_syncs(self, job: Callable[[], object]) -> int | None:
        """How many times one job made the host wait for the GPU (torch's sync debug mode: ``.item()``,
        ``.cpu()``, copies from pageable memory...). Each one lets the GPU run dry while the host queues the
        next kernels; a count that grows with the steps is a per-step cost. None on the CPU."""
        if self.device.type != "cuda":
            return None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                job()
                self.sync()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(warning.message) for warning in caught)

    def timed(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def fast_settings(self) -> dict:
        settings = dict(compile=True, compile_mode=self.args.compile_mode, channels_last=True, fuse_qkv=True)
        if self.has_batching:
            settings["batch_requests"] = 4
        return settings

    # ----- LoRA switching and batching on the fast engine ---------------------------------------
    def lora_switch(self, engine: Engine, name: str, size: int) -> dict:
        from app.engine.lora_runtime import ActiveLora

        loaded = engine.manager.get(name)
        adapters = loaded.adapters
        assert adapters is not None
        paths = [self.models_dir / "Lora" / f"speed-{i}.safetensors" for i in range(2)]
        for i, path in enumerate(paths):
            on_own_thread(lambda i=i, path=path: write_lora(loaded.txt2img.unet, path, 16, seed=i))
        loras = [ActiveLora(p.stem, p, engine.registry.lora_info(p), 1.0) for p in paths]
        prompts = [PROMPT, f"{PROMPT} <lora:speed-0:1>", f"{PROMPT} <lora:speed-1:1>",
                   f"{PROMPT} <lora:speed-0:0.5> <lora:speed-1:0.5>"]
        start_graphs = compiled_graphs()
        for prompt in prompts:  # first use: loads each LoRA (peft wraps layers, which may compile once)
            engine.generate(self.request(size, prompt=prompt))
        load_graphs = compiled_graphs() - start_graphs
        before = compiled_graphs()
        switches = [timed_on_worker_ms(engine, lambda s=s: adapters.activate(s), self.device)
                    for s in ([loras[0]], [loras[1]], [], [loras[0]], [loras[1]], [], [loras[0], loras[1]], [])]
        for prompt in prompts[1:] + prompts[:1] + prompts[2:]:
            engine.generate(self.request(size, prompt=prompt))
        figures = {"recompiles_on_lora_switch": compiled_graphs() - before, "graphs_on_first_lora_load": load_graphs,
                   "lora_switch_ms": round(statistics.median(switches), 2), "lora_switch_max_ms": round(max(switches), 2)}
        self.log(f"LoRA switching: {figures}")
        return figures

    def batched(self, engine: Engine, size: int) -> dict:
        requests = [self.request(size, seed=10 + i) for i in range(4)]
        # batch_requests.py's measures: the jobs queued behind a job holding the worker, so that it finds
        # all four queued (submitted one by one, the first would start alone)
        queued_together(engine, requests)  # warm: the batch's shapes
        alone_s, batched_s, worst = [], [], 0
        for _ in range(self.runs):  # each ends with its pictures on the host: no sync needed
            seconds, singles = one_after_another(engine, requests)
            alone_s.append(seconds)
            seconds, joint = queued_together(engine, requests)
            batched_s.append(seconds)
            worst = max([worst] + [largest_difference(a.images[0], b.images[0]) for a, b in zip(singles, joint)])
        sequential, together = statistics.median(alone_s), statistics.median(batched_s)
        figures = {"sequential_images_per_s": round(4 / sequential, 3), "batched_images_per_s": round(4 / together, 3),
                   "batched_speedup": round(sequential / together, 3), "max_pixel_diff": worst}
        self.log(f"4 queued jobs: {figures}")
        return figures

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ----- one architecture ------------------------------------------------------------------------
    def run_arch(self, out: dict, arch: str, size: int, batches: list[int], extras: bool) -> None:
        """Fills ``out`` as it goes (a cut run keeps what was measured)."""
        out.update(size=size, batches=batches)
        if self.deadline.passed(f"{arch} build"):
            return
        name = out["model"] = on_own_thread(lambda: self.build(arch))
        out["plain"] = on_own_thread(lambda: self.plain(name, size, batches))
        self.free()
        variants = [("engine", {})]
        if extras:
            variants += [("channels_last", {"channels_last": True}), ("fuse_qkv", {"fuse_qkv": True}),
                         ("gpu_rng", {"rng": "gpu"})]
        for label, settings in variants:
            if self.deadline.passed(f"{arch} {label}"):
                continue
            out[label] = self.variant(label, name, size, batches if label == "engine" else batches[:1], settings)
            if label == "engine" and extras:
                self.xformers(out, name, size)
        if self.deadline.passed(f"{arch} fast"):
            return
        engine = self.engine(name, **self.fast_settings())
        try:  # a failure here ends this architecture's phases (main goes on), not with its engine still loaded
            out["compile_s"] = {}
            out["fast"] = self.engine_figures(engine, name, size, batches, "fast", out["compile_s"])
            if extras and not self.deadline.passed("LoRA switching"):
                out["lora"] = self.lora_switch(engine, name, size)
            if extras and self.has_batching and not self.deadline.passed("batching"):
                out["batching"] = self.batched(engine, size)
        finally:
            engine.shutdown()
            engine.manager.unload_all()
            self.free()


def on_own_thread(fn: Callable[[], object]) -> Any:
    """``fn()`` on a thread that ends with it, as the engine's jobs run on its worker thread (the model is
    built so too, and the engine's loads on its worker, ``on_worker``: the main thread never computes).

    On the CPU this keeps the comparison fair. Each thread that computes keeps its own OpenMP team for as
    long as it lives, and once libgomp manages more threads than there are CPUs (a team on the main thread
    from plain diffusers, another on the engine's worker), its idle threads spin 100 times instead of
    300,000 before they sleep, so every small op pays a wake-up. Measured with the tiny model at 64x64 on
    2 cores: the same plain pipeline ran about 20 % slower on a second thread once the main thread had
    computed, and the quick rehearsal's engine_vs_plain was 0.64-0.85 before this, 0.96-1.15 after. On a
    GPU it changes nothing (CUDA ops do not use OpenMP). The app computes only on its worker."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="bench-step")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


XFORMERS_PROBE = """
import torch, xformers.ops
q = torch.randn(2, 4096, 8, 40, device="cuda", dtype=torch.float16)  # SD 1.5's first self-attention, 512x512
try:  # xformers' own dispatcher (not public API: a failure here only loses the name)
    from xformers.ops.fmha import Inputs, dispatch
    print(dispatch._dispatch_fw(Inputs(q, q, q), False).NAME)
except Exception as exc:
    print(f"unknown ({type(exc).__name__})")
xformers.ops.memory_efficient_attention(q, q, q)
torch.cuda.synchronize()
"""


def _probe_xformers() -> tuple[str | None, str | None]:
    """(why xformers cannot run, None) or (None, its forward operator's name), tried in a child process:
    a wheel built for another torch may crash the process that imports it, and this run's JSON line is
    not printed yet."""
    try:
        probe = subprocess.run([sys.executable, "-c", XFORMERS_PROBE], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "its probe took over 120 s", None
    if probe.returncode != 0:
        lines = (probe.stderr or "").strip().splitlines()
        return f"its probe failed: {lines[-1] if lines else probe.returncode}", None
    return None, (probe.stdout.strip().splitlines() or ["unknown"])[-1]


def _get(tree: dict, *path: str):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def main() -> None:
    args = parse_args()
    diffusers.utils.logging.disable_progress_bar()
    bench = Bench(args)
    gpu = torch.cuda.get_device_name() if bench.device.type == "cuda" else None
    print(f"{gpu or 'CPU'}: torch {torch.__version__}, diffusers {diffusers.__version__}, python "
          f"{sys.version.split()[0]}; {bench.dtype}, {bench.steps} steps, Euler a, CFG 7, {bench.runs} timed runs; "
          f"compile mode {args.compile_mode}; batching in the engine: {bench.has_batching}", flush=True)
    size_sd15, size_sdxl = (64, 64) if args.quick else (512, 1024)
    sd15: dict = {}
    sdxl: dict = {}
    signal.signal(signal.SIGTERM, _cut)
    cut = False
    errors: dict[str, str] = {}
    phases = (([] if args.no_sd15 else [(sd15, "sd15", size_sd15, [1, 4], True)])
              + ([] if args.no_sdxl else [(sdxl, "sdxl", size_sdxl, [1], False)]))
    try:
        for out, arch, size, batches, extras in phases:
            try:
                bench.run_arch(out, arch, size, batches, extras)
            except Exception as exc:  # an OOM, a compile error: what was measured still counts, the next goes on
                traceback.print_exc()
                errors[arch] = f"{type(exc).__name__}: {exc}"
                bench.log(f"{arch}: stopped by {errors[arch]}")
                bench.free()
    except Cut:
        cut = True
        print("-- cut by SIGTERM: reporting what was measured", flush=True)

    plain_it_s, engine_it_s, fast_it_s = (_get(sd15, part, "b1", "it_s") for part in ("plain", "engine", "fast"))
    result = {
        "gpu": gpu, "torch": torch.__version__, "diffusers": diffusers.__version__, "device": str(bench.device),
        "dtype": str(bench.dtype), "quick": args.quick, "cut": cut, "errors": errors, "steps": bench.steps,
        "compile_mode": args.compile_mode,
        "plain_it_s": plain_it_s, "engine_it_s": engine_it_s, "fast_it_s": fast_it_s,
        "engine_vs_plain": _ratio(engine_it_s, plain_it_s), "speedup_vs_plain": _ratio(fast_it_s, plain_it_s),
        "plain_b4_it_s": _get(sd15, "plain", "b4", "it_s"), "fast_b4_it_s": _get(sd15, "fast", "b4", "it_s"),
        "sdxl_plain_it_s": _get(sdxl, "plain", "b1", "it_s"), "sdxl_engine_it_s": _get(sdxl, "engine", "b1", "it_s"),
        "sdxl_fast_it_s": _get(sdxl, "fast", "b1", "it_s"),
        "sdxl_speedup_vs_plain": _ratio(_get(sdxl, "fast", "b1", "it_s"), _get(sdxl, "plain", "b1", "it_s")),
        "compile_s": _get(sd15, "compile_s"), "sdxl_compile_s": _get(sdxl, "compile_s"),
        "recompiles_on_lora_switch": _get(sd15, "lora", "recompiles_on_lora_switch"),
        "lora_switch_ms": _get(sd15, "lora", "lora_switch_ms"),
        "batched_speedup": _get(sd15, "batching", "batched_speedup"),
        "batched_max_pixel_diff": _get(sd15, "batching", "max_pixel_diff"),
        "host_syncs_per_job": {part: _get(sd15, part, "b1", "host_syncs")
                               for part in ("plain", "engine", "gpu_rng", "fast")},
        "gpu_rng_it_s": _get(sd15, "gpu_rng", "b1", "it_s"),
        "xformers_it_s": _get(sd15, "xformers", "b1", "it_s"),
        "xformers_vs_sdpa": _ratio(_get(sd15, "xformers", "b1", "it_s"), engine_it_s),
        "xformers_op": sd15.get("xformers_op"),
        "sd15": sd15, "sdxl": sdxl,
    }
    print(json.dumps(result), flush=True)
    os._exit(0)  # engines of a cut run may still hold worker threads


if __name__ == "__main__":
    main()
