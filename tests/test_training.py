"""LoRA training: data handling, a real (tiny) run, exact resume, caches, the kohya file and who can
load it, the CLI alone and on two processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from PIL import Image
from safetensors import safe_open
from shape_data import draw

from app.engine.lora_files import addnet_hash, inspect_lora
from app.engine.lora_runtime import ActiveLora, LoraTensorCache, PipelineAdapters
from app.engine.tiny import build_tiny_pipeline
from app.training.config import TrainConfig
from app.training.dataset import (
    CaptionOptions,
    epoch_batches,
    fit_to_bucket,
    make_buckets,
    nearest_bucket,
    process_caption,
    sample_rng,
    scan_folder,
)
from app.training.lora_export import kohya_tensors
from app.training.trainer import adapter_state, add_adapters, train

ROOT = Path(__file__).resolve().parent.parent
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "circle"), ("red", "square")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """models/ with a tiny SD 1.x model, and a kohya-style dataset folder with one broken file."""
    root = tmp_path_factory.mktemp("training")
    build_tiny_pipeline("sd1", seed=0).save_pretrained(root / "models" / "Stable-diffusion" / "tiny")
    folder = root / "data" / "3_shapes"
    folder.mkdir(parents=True)
    for index, (colour, shape) in enumerate(SHAPES):
        draw(folder / f"{index}.png", colour, shape, (64 + 16 * (index % 2), 64))
        (folder / f"{index}.txt").write_text(f"a {colour} {shape}, flat, simple")
    (folder / "broken.png").write_bytes(b"not an image")
    return root


def config_for(workdir: Path, name: str, **changes) -> TrainConfig:
    values = dict(base_model="tiny", dataset=workdir / "data", output_name=name, models_dir=workdir / "models",
                  outputs_dir=workdir / "outputs", rank=4, alpha=2.0, resolution=64, bucket_step=8, max_steps=6,
                  learning_rate=1e-3, flip=True, device="cpu")
    values.update(changes)
    return TrainConfig(**values)


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# ----- data ----------------------------------------------------------------------------------------


def test_scan_reads_captions_repeats_and_reports_bad_files(tmp_path: Path) -> None:
    (tmp_path / "5_cats").mkdir()
    draw(tmp_path / "5_cats" / "a.png", "red", "circle")
    (tmp_path / "5_cats" / "a.txt").write_text("a cat,  sitting\n")
    draw(tmp_path / "5_cats" / "b.png", "blue", "square")  # no caption: the folder's class name
    draw(tmp_path / "c.png", "green", "circle")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "c.png", "text": "from jsonl"}) + "\n")
    Image.new("RGB", (20, 200)).save(tmp_path / "thin.png")
    Image.new("1", (9000, 9000)).save(tmp_path / "huge.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    report = scan_folder(tmp_path)
    captions = {image.path.name: (image.caption, image.repeats) for image in report.images}
    assert captions == {"a.png": ("a cat, sitting", 5), "b.png": ("cats", 5), "c.png": ("from jsonl", 1)}
    reasons = {s.path.name: s.reason for s in report.skipped}
    assert set(reasons) == {"thin.png", "huge.png", "broken.jpg"}
    assert "too small" in reasons["thin.png"] and "too large" in reasons["huge.png"]
    assert "unreadable" in reasons["broken.jpg"]
    with pytest.raises(ValueError, match="No usable images"):
        scan_folder(tmp_path / "5_cats" / "nothing-here") if False else scan_folder(_empty(tmp_path))


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_buckets_keep_the_aspect_ratio() -> None:
    buckets = make_buckets(512, 64)
    assert (512, 512) in buckets and all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    wide = nearest_bucket((1200, 800), buckets)
    assert wide[0] > wide[1] and abs(wide[0] / wide[1] - 1.5) < 0.2
    fitted = fit_to_bucket(Image.new("RGB", (1200, 800)), wide)
    assert fitted.size == wide


def test_caption_shuffle_keeps_leading_tokens_and_dropout_is_reproducible() -> None:
    options = CaptionOptions(shuffle=True, keep_tokens=1, dropout=0.0)
    seen = {process_caption("trigger, a, b, c, d", options, sample_rng(1, 0, i, 0)) for i in range(20)}
    assert all(s.startswith("trigger, ") for s in seen) and len(seen) > 3
    drop = CaptionOptions(dropout=0.5)
    first = [process_caption("x", drop, sample_rng(3, 1, i, 0)) for i in range(40)]
    assert first == [process_caption("x", drop, sample_rng(3, 1, i, 0)) for i in range(40)]
    assert 5 < first.count("") < 35


def test_epoch_order_depends_only_on_seed_and_epoch() -> None:
    buckets = [(64, 64), (64, 64), (72, 56), (64, 64)]
    order = epoch_batches(buckets, [2, 1, 3, 1], 2, seed=5, epoch=0)
    assert order == epoch_batches(buckets, [2, 1, 3, 1], 2, seed=5, epoch=0)
    assert order != epoch_batches(buckets, [2, 1, 3, 1], 2, seed=5, epoch=1)
    assert sorted(i for batch in order for i in batch) == [0, 0, 1, 2, 2, 2, 3]
    assert all(len({buckets[i] for i in batch}) == 1 for batch in order)  # one bucket per batch


# ----- a run ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(workdir: Path):
    before = _tree(workdir / "data")
    config = config_for(workdir, "full", checkpoint_every=3)
    result = train(config)
    assert _tree(workdir / "data") == before, "the user's dataset folder must not change"
    return config, result


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(workdir: Path, full_run) -> None:
    config, result = full_run
    assert result.steps == 6 and len(result.losses) == 6 and all(np.isfinite(result.losses))
    assert [c.name for c in result.checkpoints] == ["step-000003", "step-000006"]
    stops = iter([False, False, True])
    stopped = train(config_for(workdir, "resumed"), should_stop=lambda: next(stops))
    assert stopped.stopped_early and stopped.steps == 3
    resumed = train(config_for(workdir, "resumed", resume=config_for(workdir, "resumed").run_dir))
    assert resumed.steps == 6
    assert resumed.losses == result.losses, "resume must continue the same run exactly"
    a, b = (inspect_lora(p) for p in (result.lora_path, resumed.lora_path))
    with safe_open(str(result.lora_path), "pt") as first, safe_open(str(resumed.lora_path), "pt") as second:
        assert all(torch.equal(first.get_tensor(k), second.get_tensor(k)) for k in first.keys())
    assert a.layers == b.layers


def test_caches_are_reused_across_runs(workdir: Path, full_run) -> None:
    cache = workdir / "outputs" / "training" / ".cache"
    latents_before = sorted(p.name for p in (cache / "latents").iterdir())
    assert len(latents_before) == 8  # 4 images x (plain, flipped)
    assert len(list((cache / "text").iterdir())) == 4
    train(config_for(workdir, "again", max_steps=1))
    assert sorted(p.name for p in (cache / "latents").iterdir()) == latents_before


def test_a_folder_with_another_vae_does_not_reuse_latents(workdir: Path, full_run) -> None:
    """Same UNet (so the same model hash), other VAE weights: the latents are computed afresh, the text
    embeddings (same text encoder) are reused."""
    import shutil

    from safetensors.torch import load_file, save_file

    cache = workdir / "outputs" / "training" / ".cache"
    latents_before, texts_before = len(list((cache / "latents").iterdir())), len(list((cache / "text").iterdir()))
    copy = workdir / "models" / "Stable-diffusion" / "tiny-other-vae"
    shutil.copytree(workdir / "models" / "Stable-diffusion" / "tiny", copy)
    vae_file = copy / "vae" / "diffusion_pytorch_model.safetensors"
    save_file({k: v * 1.01 for k, v in load_file(vae_file).items()}, vae_file)
    train(config_for(workdir, "other-vae", base_model="tiny-other-vae", max_steps=1))
    assert len(list((cache / "latents").iterdir())) == latents_before + 8
    assert len(list((cache / "text").iterdir())) == texts_before


def test_the_file_is_kohya_format_with_metadata_and_hashes(full_run) -> None:
    config, result = full_run
    path = result.lora_path
    assert path == config.lora_path and path.parent.name == "Lora"
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in keys}
    assert keys and all(re.match(r"^lora_(unet|te)_\w+\.(lora_down\.weight|lora_up\.weight|alpha)$", k) for k in keys)
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert all(float(t) == 2.0 for k, t in tensors.items() if k.endswith(".alpha"))
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_network_dim"] == "4"
    assert metadata["ss_network_alpha"] == "2" and metadata["ss_steps"] == "6"
    assert metadata["ss_output_name"] == "full" and metadata["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert json.loads(metadata["ss_tag_frequency"])["3_shapes"]["flat"] == 12  # 4 captions x 3 repeats
    assert metadata["sshs_model_hash"] == addnet_hash(path)  # kohya's hash of the tensor bytes
    assert re.fullmatch(r"[0-9a-f]{8}", metadata["sshs_legacy_hash"])
    assert float(metadata["ss_training_started_at"]) <= float(metadata["ss_training_finished_at"])


def _image(pipe) -> np.ndarray:
    return pipe(prompt="a red circle", num_inference_steps=3, width=64, height=64,
                generator=torch.Generator().manual_seed(4), output_type="np").images[0]


def test_the_file_loads_in_our_runtime_and_in_diffusers_with_the_same_output(full_run) -> None:
    _, result = full_run
    ours = build_tiny_pipeline("sd1", seed=0)
    ours.set_progress_bar_config(disable=True)
    base = _image(ours)
    adapters = PipelineAdapters(ours, LoraTensorCache(2**30), 4, "sd1", "tiny")
    info = inspect_lora(result.lora_path)
    adapters.activate([ActiveLora("full", result.lora_path, info, 1.0)])  # raises if any layer is unmatched
    assert adapters.layer_count(adapters.loaded_adapters[0]) == info.layers
    mine = _image(ours)
    theirs_pipe = build_tiny_pipeline("sd1", seed=0)
    theirs_pipe.set_progress_bar_config(disable=True)
    theirs_pipe.load_lora_weights(str(result.lora_path), adapter_name="x")
    theirs = _image(theirs_pipe)
    assert np.abs(mine - base).max() > 1e-3, "the trained LoRA changes the output"
    assert np.abs(mine - theirs).max() < 1e-4


def _unet_drift(pipe, lora_path: Path, prompt: str) -> float:
    """How far a LoRA moves the UNet's prediction on ``prompt`` (fixed noisy latents and timesteps)."""
    hidden = pipe.encode_prompt(prompt, "cpu", 1, False)[0].repeat(4, 1, 1)
    latents = torch.randn((4, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([100, 400, 700, 950])
    with torch.no_grad():
        pipe.unload_lora_weights()
        base = pipe.unet(latents, timesteps, hidden).sample
        pipe.load_lora_weights(str(lora_path), adapter_name="x")
        moved = pipe.unet(latents, timesteps, hidden).sample
    return float((moved - base).pow(2).mean())


def test_prior_preservation_keeps_the_base_prediction_on_its_prompts(tmp_path: Path) -> None:
    """On the bundled model (a tiny model's untrained text encoder hardly tells prompts apart): a LoRA
    taught stars with a kept prompt moves that prompt's prediction far less than one taught without,
    and the star's as much."""
    from diffusers import StableDiffusionPipeline

    from app.demo import BUNDLED_PATH, DEMO_MODEL
    from app.demo.evaluate import star_dataset

    models = tmp_path / "models"
    (models / "Stable-diffusion").mkdir(parents=True)
    (models / "Stable-diffusion" / DEMO_MODEL).symlink_to(BUNDLED_PATH)
    data = star_dataset(tmp_path / "stars", 8)
    kept, taught = "a white square on a black background", "a red star on a green background"
    runs = {weight: train(TrainConfig(base_model=DEMO_MODEL, dataset=data, output_name=f"preserve-{weight}",
                                      models_dir=models, outputs_dir=tmp_path / "outputs", rank=8, alpha=8.0,
                                      resolution=64, bucket_step=8, batch_size=4, max_steps=30, learning_rate=5e-3,
                                      device="cpu", preserve_prompts=(kept,) if weight else (),
                                      preserve_weight=weight)).lora_path
            for weight in (0.0, 4.0)}
    pipe = StableDiffusionPipeline.from_pretrained(BUNDLED_PATH)
    drift = {(weight, prompt): _unet_drift(pipe, path, prompt) for weight, path in runs.items()
             for prompt in (kept, taught)}
    assert drift[4.0, kept] < 0.3 * drift[0.0, kept]
    assert drift[4.0, taught] > 0.5 * drift[0.0, taught], "the star is still learnt"
    assert drift[4.0, taught] > 3 * drift[4.0, kept]
    with pytest.raises(ValueError, match="train_text_encoder"):
        TrainConfig(base_model=DEMO_MODEL, dataset=data, output_name="x", preserve_prompts=("a",),
                    train_text_encoder=True).validate()


# ----- A1111's and ComfyUI's key rules, re-implemented from their documented behaviour --------------


def a1111_compvis_name(key: str) -> str:
    """A1111 ``convert_diffusers_name_to_compvis`` for SD 1.x names (3 layers per UNet level)."""
    resnet = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
              "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}

    def tail(kind: str, rest: str) -> str:
        return resnet.get(rest, rest) if kind == "resnets" else rest

    if m := re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        return (f"diffusion_model_input_blocks_{1 + int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
                f"{tail(m[2], m[4])}")
    if m := re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key):
        return f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else int(m[2]) * 2}_{tail(m[1], m[3])}"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        return (f"diffusion_model_output_blocks_{int(m[1]) * 3 + int(m[3])}_{1 if m[2] == 'attentions' else 0}_"
                f"{tail(m[2], m[4])}")
    if m := re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", key):
        return f"transformer_text_model_encoder_layers_{m[1]}_{m[2]}"
    return key


COMFY_CLIP_PARTS = ("mlp_fc1", "mlp_fc2", "self_attn_k_proj", "self_attn_q_proj", "self_attn_v_proj",
                    "self_attn_out_proj")


def comfy_accepts(name: str, diffusers_paths: set[str], sgm_paths: set[str], te_layers: int) -> bool:
    """ComfyUI ``model_lora_keys_unet`` / ``model_lora_keys_clip``: a UNet name is its diffusers or its
    SGM module path with "." -> "_"; a text-encoder name one of CLIP's adapted layers."""
    if name.startswith("lora_unet_"):
        rest = name[len("lora_unet_"):]
        return rest in {p.replace(".", "_") for p in diffusers_paths | sgm_paths}
    m = re.match(r"lora_te1?_text_model_encoder_layers_(\d+)_(.+)$", name)
    return bool(m) and int(m[1]) < te_layers and m[2] in COMFY_CLIP_PARTS


def test_exported_names_satisfy_a1111_and_comfyui(tmp_path: Path) -> None:
    from ldm_export import UNET_PREFIX, unet_to_ldm

    pipe = build_tiny_pipeline("sd1", seed=0)
    unet = UNet2DConditionModel.from_config({**dict(pipe.unet.config), "layers_per_block": 2})  # SD's 3 per level
    config = TrainConfig(base_model="x", dataset=tmp_path, output_name="keys", rank=2, alpha=1.0, conv_rank=2,
                         train_text_encoder=True)
    # the models' own module names, before adapters wrap them
    ldm_modules = {k[len(UNET_PREFIX):].rsplit(".", 1)[0] for k in unet_to_ldm(unet) if k.startswith(UNET_PREFIX)}
    a1111_modules = {"diffusion_model_" + m.replace(".", "_") for m in ldm_modules}
    a1111_modules |= {f"transformer_text_model_{n.replace('.', '_')}" for n, _ in pipe.text_encoder.named_modules()}
    diffusers_paths = {n for n, _ in unet.named_modules()}
    add_adapters(unet, [pipe.text_encoder], config)
    states = {"unet": adapter_state(unet), "text_encoder": adapter_state(pipe.text_encoder)}
    names = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0]
             for k in kohya_tensors(states, {"unet": 1.0, "text_encoder": 1.0}, "sd1", 2)}
    unmatched = [n for n in names if a1111_compvis_name(n) not in a1111_modules]
    assert not unmatched, f"A1111 would not find: {unmatched[:5]}"
    te_layers = pipe.text_encoder.config.num_hidden_layers
    rejected = [n for n in names if not comfy_accepts(n, diffusers_paths, ldm_modules, te_layers)]
    assert not rejected, f"ComfyUI would not load: {rejected[:5]}"
    assert any("resnets" in n for n in names) and any(n.startswith("lora_te_") for n in names)


# ----- other families, the CLI, two processes ------------------------------------------------------


def test_sdxl_training_writes_sgm_names_that_load(tmp_path: Path, workdir: Path) -> None:
    build_tiny_pipeline("sdxl", seed=0).save_pretrained(tmp_path / "models" / "Stable-diffusion" / "xl")
    config = config_for(workdir, "xl", base_model="xl", models_dir=tmp_path / "models", max_steps=2,
                        train_text_encoder=True, outputs_dir=tmp_path / "outputs")
    result = train(config)
    info = inspect_lora(result.lora_path)
    with safe_open(str(result.lora_path), "pt") as handle:
        keys = list(handle.keys())
        assert handle.metadata()["ss_base_model_version"] == "sdxl_base_v1-0"
    assert info.family == "sdxl" and any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert any(k.startswith("lora_te1_") for k in keys) and any(k.startswith("lora_te2_") for k in keys)
    pipe = build_tiny_pipeline("sdxl", seed=0)
    adapters = PipelineAdapters(pipe, LoraTensorCache(2**30), 2, "sdxl", "xl")
    adapters.activate([ActiveLora("xl", result.lora_path, info, 1.0)])  # every layer matched
    kept = train(config_for(workdir, "xl-kept", base_model="xl", models_dir=tmp_path / "models", max_steps=2,
                            outputs_dir=tmp_path / "outputs", preserve_prompts=("a blue square",)))
    assert kept.steps == 2 and all(np.isfinite(kept.losses))  # preservation with SDXL's size conditioning


CLI_TIMEOUT_S = 140


def _cli(args: list[str], cwd: Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Runs the training CLI. GLOO_SOCKET_IFNAME keeps accelerate's processes talking over loopback.

    A run that hangs is killed at CLI_TIMEOUT_S (a test may make two runs in pytest's own 300 s), with every
    process under it: torch's launcher starts each worker in a session of its own, so neither killing
    the launcher nor its process group would end them. The output goes to files, not pipes, so that a
    killed run's output can still be read and shown."""
    import psutil  # accelerate's own dependency

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT),
           "GLOO_SOCKET_IFNAME": "lo"}
    command = (launcher or [sys.executable]) + ["-m", "app.training", *args]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)
        hung = False
        try:
            process.wait(timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            hung = True
            for child in [*psutil.Process(process.pid).children(recursive=True), process]:
                with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                    child.kill()
            process.wait()
        stdout.seek(0)
        stderr.seek(0)
        done = subprocess.CompletedProcess(command, process.returncode, stdout.read(), stderr.read())
    if hung:
        pytest.fail(f"{' '.join(command[:3])} ... did not end in {CLI_TIMEOUT_S} s; its output:\n"
                    f"{(done.stdout + done.stderr)[-4000:]}")
    return done


def test_cli_with_flags_and_with_a_toml_file(workdir: Path, tmp_path: Path) -> None:
    common = ["--base-model", "tiny", "--dataset", str(workdir / "data"), "--models-dir", str(workdir / "models"),
              "--outputs-dir", str(tmp_path / "outputs"), "--rank", "2", "--resolution", "64", "--bucket-step", "8",
              "--max-steps", "2", "--device", "cpu"]
    done = _cli([*common, "--output-name", "cli-flags"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 2/2" in done.stdout and (workdir / "models" / "Lora" / "cli-flags.safetensors").is_file()
    assert "broken.png: unreadable" in done.stdout
    toml = tmp_path / "run.toml"
    toml.write_text(f'base_model = "tiny"\ndataset = "{workdir / "data"}"\noutput_name = "cli-toml"\n'
                    f'models_dir = "{workdir / "models"}"\noutputs_dir = "{tmp_path / "outputs"}"\nrank = 2\n'
                    f'resolution = 64\nbucket_step = 8\nmax_steps = 1\ndevice = "cpu"\n')
    done = _cli(["--config", str(toml)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (workdir / "models" / "Lora" / "cli-toml.safetensors").is_file()
    bad = _cli(["--base-model", "tiny"], tmp_path)
    assert bad.returncode == 2 and "Missing: --dataset, --output-name" in bad.stderr


def test_two_processes_under_accelerate_launch(workdir: Path, tmp_path: Path) -> None:
    accelerate = Path(sys.executable).parent / "accelerate"
    launcher = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    done = _cli(["--base-model", "tiny", "--dataset", str(workdir / "data"), "--output-name", "two-procs",
                 "--models-dir", str(workdir / "models"), "--outputs-dir", str(tmp_path / "outputs"), "--rank", "2",
                 "--resolution", "64", "--bucket-step", "8", "--max-steps", "2", "--device", "cpu"], tmp_path, launcher)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "process 1 of 2" in done.stderr and "process 2 of 2" in done.stderr
    assert done.stdout.count("step 2/2") == 1  # progress printed once, by the main process
    assert (workdir / "models" / "Lora" / "two-procs.safetensors").is_file()


def test_sd2_v_prediction_with_accumulation_checkpointing_and_the_8bit_fallback(tmp_path: Path, workdir: Path,
                                                                                 caplog) -> None:
    import logging

    build_tiny_pipeline("sd2", prediction_type="v_prediction", seed=0).save_pretrained(
        tmp_path / "models" / "Stable-diffusion" / "v2")
    config = config_for(workdir, "v2", base_model="v2", models_dir=tmp_path / "models", max_steps=2,
                        gradient_accumulation=2, gradient_checkpointing=True, optimizer="adamw8bit",
                        noise_offset=0.05, lr_warmup_steps=1, outputs_dir=tmp_path / "outputs")
    with caplog.at_level(logging.WARNING):
        result = train(config)
    assert "8-bit AdamW is not available" in caplog.text  # no CUDA here: torch's AdamW, said in the log
    assert result.steps == 2 and all(np.isfinite(result.losses))
    with safe_open(str(result.lora_path), "pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_base_model_version"] == "sd_v2_v" and metadata["modelspec.prediction_type"] == "v"
    assert inspect_lora(result.lora_path).family == "sd2"


def test_uploads_are_staged_safely(tmp_path: Path) -> None:
    import zipfile

    from app.training.staging import stage_uploads

    draw(tmp_path / "one.png", "red", "circle")
    (tmp_path / "one.txt").write_text("a red circle")
    (tmp_path / "notes.exe").write_bytes(b"MZ")
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(tmp_path / "one.png", "5_things/two.png")
        bundle.writestr("5_things/two.txt", "a thing")
        bundle.writestr("../escape.png", b"x")
        bundle.writestr("/abs.png", b"x")
        bundle.writestr("__MACOSX/._two.png", b"x")
    target = tmp_path / "staged"
    ignored = stage_uploads([tmp_path / "one.png", tmp_path / "one.txt", tmp_path / "notes.exe", archive], target)
    staged = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert staged == ["5_things/two.png", "5_things/two.txt", "one.png", "one.txt"]
    assert not (tmp_path / "escape.png").exists()
    assert any("notes.exe" in line for line in ignored) and any("escape" in line for line in ignored)
    report = scan_folder(target, caption_overrides={"one.png": "edited caption"})
    assert {i.path.name: (i.caption, i.repeats) for i in report.images} == {
        "two.png": ("a thing", 5), "one.png": ("edited caption", 1)}
