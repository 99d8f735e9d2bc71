"""The Train LoRA tab: data (a folder, or dropped images/zips), captions in a table, settings, a live
loss plot and samples, Stop, the evaluation report, and "use in txt2img"."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from PIL import Image

from app.engine import Engine
from app.training.job import Training
from app.training.config import TrainConfig
from app.training.dataset import scan_folder
from app.training.staging import stage_uploads, staging_folder
from app.ui.generate_tab import default_card, interrupt, owner_of
from app.ui.lora_picker import lora_choices, with_tag
from app.ui.progress import progress_html

log = logging.getLogger(__name__)

CAPTION_COLUMNS = ["image", "caption"]


@dataclass
class TrainTab:
    use_in_txt2img: gr.Button
    trained_lora: gr.State  # the name of this session's last trained LoRA


def staged_dataset(engine: Engine, training: Training, name: str, folder: str,
                   uploads: list | None) -> tuple[Path, list[str]]:
    """(the dataset folder to train on, files ignored). Uploads are copied under outputs/training/datasets;
    a typed folder must lie inside the Training service's allowed dataset roots."""
    try:
        if uploads:
            target = staging_folder(engine.config.outputs_dir, name)
            shutil.rmtree(target, ignore_errors=True)
            ignored = stage_uploads([Path(getattr(f, "name", f)) for f in uploads], target)
            return target, ignored
        if folder and folder.strip():
            return training.dataset_folder(folder.strip()), []
    except ValueError as exc:  # DatasetFolderError names the allowed folders
        log.warning("dataset refused: %s", exc)
        raise gr.Error(str(exc)) from exc
    raise gr.Error("Give a dataset: a folder on this machine, or drop images (or a zip) here.")


def caption_table(dataset: Path) -> tuple[pd.DataFrame, str]:
    """The images and captions of a dataset as a table, and what was skipped."""
    try:
        report = scan_folder(dataset)
    except ValueError as exc:
        raise gr.Error(str(exc)) from exc
    rows = [[image.path.relative_to(dataset).as_posix(), image.caption] for image in report.images]
    return pd.DataFrame(rows, columns=CAPTION_COLUMNS), report.summary().replace("\n", "  \n")


def caption_overrides(table: Any, dataset: Path) -> dict[str, str]:
    """The captions of the table that differ from the dataset's own (only those are written)."""
    if table is None:
        return {}
    frame = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table, columns=CAPTION_COLUMNS)
    if frame.empty:
        return {}
    current = {image.path.relative_to(dataset).as_posix(): image.caption for image in scan_folder(dataset).images}
    edited = {str(row["image"]): str(row["caption"]).strip() for _, row in frame.iterrows()}
    return {path: caption for path, caption in edited.items() if path in current and current[path] != caption}


def loss_frame(losses: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"step": list(range(1, len(losses) + 1)), "loss": losses})


def report_outputs(files: dict[str, str] | None) -> tuple[str, Any, Any]:
    """(report text without its image links, grid image, loss image). The images are handed over as
    pictures, not paths: the report lives in models/Lora, which the server never serves."""
    if not files:
        return "", None, None
    text = Path(files["markdown"]).read_text(encoding="utf-8")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("!["))
    return text, _picture(files.get("grid")), _picture(files.get("loss"))


def _picture(path: str | None) -> Image.Image | None:
    if not path:
        return None
    with Image.open(path) as image:
        return image.copy()


def build_train_tab(engine: Engine, training: Training) -> TrainTab:
    checkpoints = [e.name for e in engine.registry.checkpoints()]
    card = default_card(engine)
    with gr.Row():
        with gr.Column(scale=1):
            base_model = gr.Dropdown(checkpoints, value=engine.config.default_model, label="Base model",
                                     allow_custom_value=True, elem_id="train_base_model")
            output_name = gr.Textbox(label="LoRA name (written to models/Lora/<name>.safetensors)",
                                     elem_id="train_output_name")
            folder = gr.Textbox(label="Dataset folder on this machine (images + same-name .txt captions; "
                                      "kohya N_name folders repeat N times)", elem_id="train_folder")
            uploads = gr.File(label="…or drop images, captions or a zip", file_count="multiple",
                              file_types=["image", ".txt", ".zip"], elem_id="train_uploads")
            load = gr.Button("Load dataset and captions", elem_id="train_load")
            data_report = gr.Markdown(elem_id="train_data_report")
            captions = gr.Dataframe(headers=CAPTION_COLUMNS, datatype=["str", "str"], interactive=True,
                                    label="Captions (edits are used for this run; your files are not changed)",
                                    elem_id="train_captions", wrap=True)
            with gr.Accordion("Settings", open=False):
                with gr.Row():
                    rank = gr.Slider(1, 128, value=16, step=1, label="Rank", elem_id="train_rank")
                    alpha = gr.Slider(1, 128, value=16, step=1, label="Alpha", elem_id="train_alpha")
                with gr.Row():
                    learning_rate = gr.Number(value=1e-4, label="Learning rate", elem_id="train_lr")
                    steps = gr.Slider(1, 20000, value=500, step=1, label="Steps", elem_id="train_steps")
                with gr.Row():
                    batch_size = gr.Slider(1, 16, value=1, step=1, label="Batch size")
                    resolution = gr.Slider(64, 1536, value=card.get("default_width", 512), step=8,
                                           label="Resolution", elem_id="train_resolution")
                with gr.Row():
                    train_te = gr.Checkbox(label="Train the text encoder too")
                    flip = gr.Checkbox(label="Random flip")
                    shuffle = gr.Checkbox(label="Shuffle caption tags")
                with gr.Row():
                    keep_tokens = gr.Slider(0, 8, value=1, step=1, label="Tags kept in front when shuffling")
                    dropout = gr.Slider(0, 0.5, value=0, step=0.01, label="Caption dropout")
                with gr.Row():
                    noise_offset = gr.Slider(0, 0.2, value=0, step=0.01, label="Noise offset")
                    seed = gr.Number(value=42, precision=0, label="Seed")
                with gr.Row():
                    checkpoint_every = gr.Slider(0, 5000, value=0, step=50, label="Checkpoint every N steps (0: end)")
                    sample_every = gr.Slider(0, 5000, value=100, step=1, label="Samples every N steps (0: none)",
                                             elem_id="train_sample_every")
                sample_prompts = gr.Textbox(label="Sample prompts, one per line (fixed seeds)", lines=2,
                                            elem_id="train_sample_prompts")
                preserve = gr.Textbox(label="Prior preservation: prompts the LoRA must leave as the base model "
                                      "draws them, one per line (optional; costs about 55% more time a step)",
                                      lines=2, elem_id="train_preserve_prompts")
            with gr.Row():
                start = gr.Button("Train", variant="primary", elem_id="train_start")
                stop = gr.Button("Stop", elem_id="train_stop")
            status = gr.Markdown(elem_id="train_status")
        with gr.Column(scale=1):
            progress = gr.HTML(label="Progress", elem_id="train_progress")
            loss_plot = gr.LinePlot(loss_frame([]), x="step", y="loss", label="Training loss", height=220,
                                    elem_id="train_loss")
            samples = gr.Gallery(label="Samples during training", columns=4, height=200, elem_id="train_samples")
            report = gr.Markdown(elem_id="train_report")
            with gr.Row():
                grid = gr.Image(label="Without / with the LoRA", interactive=False, height=300, elem_id="train_grid")
                curve = gr.Image(label="Loss curve", interactive=False, height=300, elem_id="train_curve")
            use = gr.Button("Use in txt2img", elem_id="train_use")
            with gr.Accordion("Evaluate any LoRA", open=False):
                eval_lora = gr.Dropdown(lora_choices(engine), label="LoRA", elem_id="train_eval_lora")
                eval_prompts = gr.Textbox(label="Prompts, one per line", lines=2)
                eval_button = gr.Button("Evaluate", elem_id="train_eval_start")
    trained = gr.State("")

    def load_dataset(name: str, folder_text: str, files: list | None) -> tuple[pd.DataFrame, str]:
        dataset, ignored = staged_dataset(engine, training, name or "dataset", folder_text, files)
        table, summary = caption_table(dataset)
        return table, summary + ("  \nIgnored uploads: " + ", ".join(ignored) if ignored else "")

    load.click(load_dataset, [output_name, folder, uploads], [captions, data_report], api_name=False)

    def run(base: str, name: str, folder_text: str, files: list | None, table: Any, rank_: float, alpha_: float,
            lr: float, steps_: float, batch: float, resolution_: float, te: bool, flip_: bool, shuffle_: bool,
            keep: float, dropout_: float, offset: float, seed_: float, every: float, sample_every_: float,
            prompts_text: str, preserve_text: str, request: gr.Request) -> Iterator[tuple]:
        name = (name or "").strip()
        dataset, _ = staged_dataset(engine, training, name, folder_text, files)
        prompts, preserved = (tuple(line.strip() for line in (text or "").splitlines() if line.strip())
                              for text in (prompts_text, preserve_text))
        resolution_ = int(resolution_)
        config = TrainConfig(
            base_model=base, dataset=dataset, output_name=name, models_dir=engine.config.models_dir,
            outputs_dir=engine.config.outputs_dir, rank=int(rank_), alpha=float(alpha_), learning_rate=float(lr),
            max_steps=int(steps_), batch_size=int(batch), resolution=resolution_,
            bucket_step=64 if resolution_ % 64 == 0 and resolution_ >= 256 else 8, train_text_encoder=bool(te),
            flip=bool(flip_), shuffle_caption=bool(shuffle_), keep_tokens=int(keep), caption_dropout=float(dropout_),
            noise_offset=float(offset), seed=int(seed_ or 0), checkpoint_every=int(every),
            sample_every=int(sample_every_) if prompts else 0, sample_prompts=prompts, preserve_prompts=preserved,
            device=str(engine.manager.device.type) if engine.manager.device.type == "cpu" else "auto")
        try:
            config.validate()
            overrides = caption_overrides(table, dataset)
            if overrides:
                config.run_dir.mkdir(parents=True, exist_ok=True)
                path = config.run_dir / "captions.json"
                path.write_text(json.dumps(overrides, indent=1), encoding="utf-8")
                config.caption_overrides = path
            job = training.submit_training(config, owner_of(request))
        except ValueError as exc:
            log.warning("training refused: %s", exc)
            raise gr.Error(str(exc)) from exc
        losses: list[float] = []
        shots: list[str] = []
        for event in job.events():
            if event.phase == "training":
                losses.append(event.loss)
                shots += [str(p) for p in event.samples]
                yield (progress_html(event), loss_frame(losses), shots or gr.update(), gr.update(), gr.update(),
                       gr.update(), gr.update(), gr.update())
            elif event.phase == "failed":
                raise gr.Error(event.message)
            elif event.phase == "done":
                info = event.result.info
                text, grid_path, curve_path = report_outputs(info.get("report"))
                stopped = " (stopped early)" if info["stopped_early"] else ""
                summary = (f"**{name}** written after {info['steps']} steps in {info['seconds']:.0f} s{stopped}: "
                           f"`<lora:{name}:1>`")
                if info["skipped_images"]:
                    summary += "  \nSkipped: " + "; ".join(info["skipped_images"])
                yield (progress_html(event), loss_frame(info["losses"]), shots or gr.update(), text, grid_path,
                       curve_path, name, summary)
            else:
                yield (progress_html(event), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(),
                       gr.update(), gr.update())

    inputs = [base_model, output_name, folder, uploads, captions, rank, alpha, learning_rate, steps, batch_size,
              resolution, train_te, flip, shuffle, keep_tokens, dropout, noise_offset, seed, checkpoint_every,
              sample_every, sample_prompts, preserve]
    outputs = [progress, loss_plot, samples, report, grid, curve, trained, status]
    start.click(run, inputs, outputs, api_name="train", concurrency_limit=None)
    stop.click(interrupt(engine), None, status, api_name=False, queue=False)

    def evaluate(lora: str | None, base: str, prompts_text: str, resolution_: float,
                 request: gr.Request) -> Iterator[tuple]:
        if not lora:
            raise gr.Error("Pick a LoRA to evaluate.")
        prompts = tuple(line.strip() for line in (prompts_text or "").splitlines() if line.strip()) or ("a photo",)
        try:
            job = training.submit_evaluation(lora, base, prompts, owner_of(request), size=int(resolution_))
        except ValueError as exc:
            raise gr.Error(str(exc)) from exc
        for event in job.events():
            if event.phase == "failed":
                raise gr.Error(event.message)
            if event.phase == "done":
                text, grid_path, curve_path = report_outputs(event.result.info["report"])
                yield progress_html(event), text, grid_path, curve_path
            else:
                yield progress_html(event), gr.update(), gr.update(), gr.update()

    eval_button.click(evaluate, [eval_lora, base_model, eval_prompts, resolution], [progress, report, grid, curve],
                      api_name=False, concurrency_limit=None)
    return TrainTab(use, trained)


def use_in_prompt(name: str, prompt: str) -> tuple[Any, Any]:
    """The txt2img prompt with the trained LoRA's tag, and the tab switch."""
    if not name:
        raise gr.Error("Train a LoRA first.")
    return with_tag(prompt, name, 1.0), gr.Tabs(selected="txt2img")
