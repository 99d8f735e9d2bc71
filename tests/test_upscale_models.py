"""Model upscalers (ESRGAN, Real-ESRGAN, SwinIR files): listing, loading, tiling, sizes, progress, alpha.

The model files are tiny networks of the real architectures (spandrel's own classes) with seeded random
weights, saved as .safetensors and as Real-ESRGAN's .pth layout; everything runs offline on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine import resize
from app.engine.config import EngineConfig
from app.engine.jobs import JobCancelled
from app.engine.manager import ModelManager
from app.engine.registry import ModelRegistry
from app.engine.spandrel_import import import_spandrel
from app.engine.tiled_upscale import count_tiles, pad_to_requirements, tile_grid, upscale_tiled
from app.engine.upscale_models import UpscalerFileError, check_upscaler, find_upscaler_files
from app.engine.upscalers import UpscalerLibrary, model_passes
from restoration_fixtures import esrgan_state

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid")  # inside spandrel's SwinIR

RRDB_RADIUS = 20  # input pixels a 1-block RRDB output pixel depends on, either way (17 convs at input size + upsampling)


# ----- model files ---------------------------------------------------------------------------------

def _real_esrgan_layout(old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An old-layout 4x RRDB state dict in the layout of xinntao's Real-ESRGAN .pth files (conv_first,
    body.N.rdbM.convK, conv_body, conv_up1/2, conv_hr, conv_last)."""
    blocks = 1 + max(int(k.split(".")[3]) for k in old if k.startswith("model.1.sub.") and ".RDB" in k)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in old.items():
        parts = key.split(".")
        kind = parts[-1]
        if key.startswith("model.1.sub.") and ".RDB" in key:  # model.1.sub.I.RDBJ.convK.0.weight
            renamed[f"body.{parts[3]}.rdb{parts[4][3:]}.{parts[5]}.{kind}"] = value
        elif key.startswith(f"model.1.sub.{blocks}."):
            renamed[f"conv_body.{kind}"] = value
        else:
            name = {"0": "conv_first", "3": "conv_up1", "6": "conv_up2", "8": "conv_hr", "10": "conv_last"}[parts[1]]
            renamed[f"{name}.{kind}"] = value
    return renamed


def _swinir_state(*, seed: int) -> dict[str, torch.Tensor]:
    """A tiny 2x SwinIR (12-dim embedding, one 2-block layer, window 4) with a pixel-shuffle upsampler."""
    from spandrel.architectures.SwinIR import SwinIR

    torch.manual_seed(seed)
    network = SwinIR(img_size=16, embed_dim=12, depths=[2], num_heads=[2], window_size=4, upscale=2,
                     upsampler="pixelshuffle", mlp_ratio=2.0)
    return {k: v.clone() for k, v in network.state_dict().items()}


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models/ folder with upscalers in A1111's and ComfyUI's folders, and files that are not upscalers."""
    import_spandrel()
    root = tmp_path_factory.mktemp("upscaler_models")
    for folder in ("ESRGAN", "RealESRGAN", "SwinIR", "upscale_models/junk"):
        (root / folder).mkdir(parents=True)
    x4 = esrgan_state(4, seed=1)
    save_file(x4, root / "ESRGAN" / "4x_tiny_esrgan.safetensors")
    save_file(esrgan_state(1, seed=2), root / "ESRGAN" / "1x_tiny_denoise.safetensors")
    save_file(esrgan_state(2, seed=3, shuffle=True), root / "RealESRGAN" / "RealESRGAN_x2_tiny.safetensors")
    torch.save({"params_ema": _real_esrgan_layout(x4)}, root / "RealESRGAN" / "RealESRGAN_x4plus_tiny.pth")
    save_file(_swinir_state(seed=4), root / "SwinIR" / "SwinIR_x2_tiny.safetensors")
    (root / "upscale_models" / "junk" / "garbage.safetensors").write_bytes(np.random.default_rng(5).bytes(4096))
    save_file({"text_projection": torch.zeros(4, 4)}, root / "upscale_models" / "unrelated.safetensors")
    return root


@pytest.fixture(scope="module")
def library(models_root: Path) -> UpscalerLibrary:
    return UpscalerLibrary(models_root, allow_pickle=False)


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """An 88x88 picture with smooth shapes and noise: detail everywhere for the networks to react to."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:88, 0:88]
    smooth = np.stack([x * 2.5, y * 2.5, (x + y) * 1.4], axis=-1)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 25, smooth.shape), 0, 255).astype(np.uint8), "RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ----- listing -------------------------------------------------------------------------------------

def test_listing_reads_architecture_and_scale_from_the_files(library: UpscalerLibrary) -> None:
    listed = {info.name: info for info in library.available()}
    assert [info.name for info in library.available()[:3]] == ["None", "Lanczos", "Nearest"]
    assert (listed["4x_tiny_esrgan"].architecture, listed["4x_tiny_esrgan"].scale) == ("ESRGAN", 4.0)
    assert listed["4x_tiny_esrgan"].label == "4x_tiny_esrgan (ESRGAN 4x)"
    assert (listed["RealESRGAN_x2_tiny"].architecture, listed["RealESRGAN_x2_tiny"].scale) == ("ESRGAN", 2.0)
    assert (listed["SwinIR_x2_tiny"].architecture, listed["SwinIR_x2_tiny"].scale) == ("SwinIR", 2.0)
    assert listed["1x_tiny_denoise"].scale == 1.0 and listed["1x_tiny_denoise"].purpose == "Restoration"
    assert listed["SwinIR_x2_tiny"].path.name == "SwinIR_x2_tiny.safetensors"  # type: ignore[union-attr]
    assert all(listed[name].usable for name in ("4x_tiny_esrgan", "RealESRGAN_x2_tiny", "SwinIR_x2_tiny"))


def test_files_that_are_not_upscalers_are_listed_with_a_message_naming_them(library: UpscalerLibrary) -> None:
    listed = {info.name: info for info in library.available()}
    garbage, unrelated, pickle = listed["garbage"], listed["unrelated"], listed["RealESRGAN_x4plus_tiny"]
    assert garbage.error.startswith("garbage.safetensors cannot be read: it is damaged or not a safetensors file")
    assert unrelated.error.startswith("unrelated.safetensors is not a model spandrel recognises: its 1 tensors")
    assert "--allow-pickle" in pickle.error and pickle.error.startswith("RealESRGAN_x4plus_tiny.pth is a pickle")
    assert garbage.label == "garbage (not usable)" and garbage.architecture is None
    assert pickle.scale == 4.0  # where the file cannot be read, the scale comes from its name
    with pytest.raises(UpscalerFileError, match="garbage.safetensors cannot be read"):
        library.canonical("garbage")
    with pytest.raises(ValueError, match="--allow-pickle"):
        library.upscale(Image.new("RGB", (8, 8)), "RealESRGAN_x4plus_tiny", scale=2)


def test_names_are_matched_without_case_and_unknown_names_list_the_usable_ones(library: UpscalerLibrary) -> None:
    assert library.canonical("realesrgan_X2_TINY") == "RealESRGAN_x2_tiny"
    assert library.canonical("SwinIR_x2_tiny.safetensors") == "SwinIR_x2_tiny"
    assert library.canonical(" lanczos ") == "Lanczos"
    with pytest.raises(ValueError) as raised:
        library.canonical("R-ESRGAN 4x+")
    message = str(raised.value)
    assert message.startswith("Unknown upscaler 'R-ESRGAN 4x+'; available: None, Lanczos, Nearest, ")
    assert "4x_tiny_esrgan" in message and "SwinIR_x2_tiny" in message and "garbage" not in message


def test_a_pickle_is_refused_without_allow_pickle_and_loads_with_it(models_root: Path, picture: Image.Image,
                                                                   library: UpscalerLibrary) -> None:
    pickled = UpscalerLibrary(models_root, allow_pickle=True)
    info = {i.name: i for i in pickled.available()}["RealESRGAN_x4plus_tiny"]
    assert (info.architecture, info.scale, info.error) == ("ESRGAN", 4.0, None)
    small = picture.crop((0, 0, 24, 20))
    # the .pth holds the same weights as 4x_tiny_esrgan.safetensors, in Real-ESRGAN's layout (params_ema)
    from_pickle = pickled.upscale(small, "RealESRGAN_x4plus_tiny", scale=4)
    from_safetensors = library.upscale(small, "4x_tiny_esrgan", scale=4)
    assert from_pickle.size == (96, 80)
    assert np.array_equal(_pixels(from_pickle), _pixels(from_safetensors))


def test_a_swinir_pickle_loads_as_its_safetensors_twin(tmp_path: Path, picture: Image.Image,
                                                     library: UpscalerLibrary) -> None:
    """SwinIR's own releases are .pth files holding {"params": ...}: with --allow-pickle they give the same
    pixels as the same weights saved as .safetensors."""
    folder = tmp_path / "SwinIR"
    folder.mkdir()
    torch.save({"params": _swinir_state(seed=4)}, folder / "SwinIR_x2_tiny_release.pth")
    with pytest.raises(UpscalerFileError, match="--allow-pickle"):
        UpscalerLibrary(tmp_path).find("SwinIR_x2_tiny_release")
    pickled = UpscalerLibrary(tmp_path, allow_pickle=True)
    info = pickled.find("SwinIR_x2_tiny_release")
    assert (info.architecture, info.scale, info.error) == ("SwinIR", 2.0, None)
    small = picture.crop((0, 0, 20, 16))
    assert np.array_equal(_pixels(pickled.upscale(small, "SwinIR_x2_tiny_release", scale=2)),
                          _pixels(library.upscale(small, "SwinIR_x2_tiny", scale=2)))


def test_file_facts_are_read_once_per_file_version(models_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import app.engine.upscale_models as upscale_models

    reads: list[str] = []
    real_load = upscale_models.load_descriptor

    def counting_load(path: Path, *, allow_pickle: bool):
        reads.append(Path(path).name)
        return real_load(path, allow_pickle=allow_pickle)

    monkeypatch.setattr(upscale_models, "load_descriptor", counting_load)
    fresh = UpscalerLibrary(models_root)
    assert fresh.canonical("swinir_x2_tiny") == "SwinIR_x2_tiny"
    assert reads == ["SwinIR_x2_tiny.safetensors"]  # finding one name reads that file only
    first = fresh.available()
    assert len(reads) == len(find_upscaler_files(models_root)) == 7
    assert fresh.available() == first and len(reads) == 7  # the second listing reads nothing
    target = models_root / "SwinIR" / "SwinIR_x2_tiny.safetensors"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    fresh.available()
    assert reads[7:] == ["SwinIR_x2_tiny.safetensors"]


def test_face_restorers_and_inpainting_models_are_not_upscalers() -> None:
    spandrel = import_spandrel()
    network = torch.nn.Conv2d(3, 3, 1)
    face = spandrel.ImageModelDescriptor(
        network, network.state_dict(), architecture=spandrel.MAIN_REGISTRY.get("GFPGAN").architecture,
        purpose="FaceSR", tags=[], supports_half=True, supports_bfloat16=True, scale=1, input_channels=3,
        output_channels=3)
    with pytest.raises(UpscalerFileError, match=r"^GFPGANv1.4.pth is a face-restoration model \(GFPGAN\), not an "):
        check_upscaler(face, "GFPGANv1.4.pth")
    inpaint = spandrel.MaskedImageModelDescriptor(
        network, network.state_dict(), architecture=spandrel.MAIN_REGISTRY.get("LaMa").architecture,
        purpose="Inpainting", tags=[], supports_half=True, supports_bfloat16=True, input_channels=3,
        output_channels=3)
    with pytest.raises(UpscalerFileError, match=r"^big-lama.safetensors is an inpainting model \(LaMa\)"):
        check_upscaler(inpaint, "big-lama.safetensors")


# ----- sizes ---------------------------------------------------------------------------------------

def test_output_size_is_the_input_times_the_files_scale(library: UpscalerLibrary, picture: Image.Image) -> None:
    small = picture.crop((0, 0, 30, 22))
    assert library.upscale(small, "4x_tiny_esrgan", scale=4).size == (120, 88)
    assert library.upscale(small, "RealESRGAN_x2_tiny", scale=2).size == (60, 44)
    assert library.upscale(small, "SwinIR_x2_tiny", scale=2).size == (60, 44)
    descriptor = library.model(library.find("4x_tiny_esrgan"))
    assert upscale_tiled(descriptor, small, tile=None).size == (120, 88)


def test_built_ins_resize_as_the_resize_module_does(library: UpscalerLibrary, picture: Image.Image) -> None:
    small = picture.crop((0, 0, 31, 20))  # 31 wide: cropping to 2:1 once computed a box starting at -2e-15
    small.putalpha(160)
    for name in ("None", "Lanczos", "Nearest"):
        for options in (dict(scale=3.33), dict(size=(100, 50)), dict(size=(100, 50), crop=True)):
            ours = library.upscale(small, name.upper(), **options)
            assert ours.mode == "RGBA"
            assert np.array_equal(_pixels(ours), _pixels(resize.upscale(small, name, **options)))
    assert np.array_equal(_pixels(library.blend(small, "Nearest", "Lanczos", 0.25, scale=2.5)),
                          _pixels(resize.blend_upscalers(small, "Nearest", "Lanczos", 0.25, scale=2.5)))


def test_other_factors_and_sizes_end_with_lanczos_on_the_models_result(library: UpscalerLibrary,
                                                                       picture: Image.Image) -> None:
    small = picture.crop((0, 0, 30, 20))
    native = library.upscale(small, "4x_tiny_esrgan", scale=4)
    by_three = library.upscale(small, "4x_tiny_esrgan", scale=3)
    assert by_three.size == (90, 60)
    assert np.array_equal(_pixels(by_three), _pixels(native.resize((90, 60), Image.Resampling.LANCZOS)))
    assert library.upscale(small, "4x_tiny_esrgan", size=(100, 50)).size == (100, 67)  # aspect kept
    cropped = library.upscale(small, "4x_tiny_esrgan", size=(100, 50), crop=True)
    assert cropped.size == (100, 50)
    assert np.array_equal(_pixels(cropped), _pixels(
        native.resize((100, 50), Image.Resampling.LANCZOS, box=(0, 10, 120, 70))))  # 120x60 of 120x80


def test_a_factor_above_the_models_scale_runs_it_again(library: UpscalerLibrary, picture: Image.Image) -> None:
    small = picture.crop((0, 0, 12, 10))
    once = library.upscale(small, "4x_tiny_esrgan", scale=4)
    twice = library.upscale(small, "4x_tiny_esrgan", scale=16)
    assert twice.size == (192, 160)
    assert np.array_equal(_pixels(twice), _pixels(library.upscale(once, "4x_tiny_esrgan", scale=4)))
    by_eight = library.upscale(small, "4x_tiny_esrgan", scale=8)  # 12x10 -> 48x40 -> 192x160, Lanczos to 96x80
    assert np.array_equal(_pixels(by_eight), _pixels(twice.resize((96, 80), Image.Resampling.LANCZOS)))
    assert model_passes((12, 10), (96, 80), 4) == [(12, 10), (48, 40)]
    assert model_passes((12, 10), (96, 80), 2) == [(12, 10), (24, 20), (48, 40)]
    assert model_passes((12, 10), (12, 10), 4) == [(12, 10)]  # the same size: the model still runs once
    assert model_passes((12, 10), (6, 5), 4) == []  # smaller: Lanczos only, as A1111
    assert model_passes((12, 10), (24, 20), 1) == [(12, 10)]  # a 1x model runs once
    restored = library.upscale(small, "1x_tiny_denoise", scale=2)
    assert restored.size == (24, 20)


def test_size_requirements_are_met_by_padding(library: UpscalerLibrary, picture: Image.Image) -> None:
    spandrel = import_spandrel()
    odd = picture.crop((0, 0, 37, 23))  # Real-ESRGAN x2 unshuffles: multiples of 4 (minimum 4)
    assert library.upscale(odd, "RealESRGAN_x2_tiny", scale=2, tile=16, overlap=4).size == (74, 46)
    tiny = picture.crop((0, 0, 10, 9))  # SwinIR: 16 pixels at least
    assert library.upscale(tiny, "SwinIR_x2_tiny", scale=2).size == (20, 18)
    row = torch.arange(3, dtype=torch.float32).reshape(1, 1, 1, 3)  # 0 1 2
    padded = pad_to_requirements(row, spandrel.SizeRequirements(minimum=4, multiple_of=1, square=True))
    assert padded.shape == (1, 1, 4, 4)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 1]  # mirrored to the right
    assert padded[0, 0, :, 0].tolist() == [0, 0, 0, 0]  # one row: repeated downwards
    grid = tile_grid((100, 30), 18, 4, spandrel.SizeRequirements(minimum=16, multiple_of=8))
    assert (grid.tile_w, grid.tile_h) == (24, 24)  # 18 grown to a multiple of 8


# ----- tiles ---------------------------------------------------------------------------------------

def test_tiles_match_the_untiled_result_away_from_the_seams(library: UpscalerLibrary, picture: Image.Image) -> None:
    """88x88 in 48 px tiles overlapping 8: tiles start at 0 and 40 each way, so the overlaps are the input
    columns/rows 40..48. A pixel further than RRDB_RADIUS from the tile borders that affect it sees the same
    inputs tiled or not. Measured (this network, this picture, of 255): away from the seams the max
    difference is 1 (float rounding); in the seam band (input 28..60 each way) the max is 13 and the mean
    0.54; within the 8 px overlaps themselves the mean is 1.86 (99th percentile of the band: 8)."""
    descriptor = library.model(library.find("4x_tiny_esrgan"))
    whole = _pixels(upscale_tiled(descriptor, picture, tile=None))
    tiled = _pixels(upscale_tiled(descriptor, picture, tile=48, overlap=8))
    assert tile_grid(picture.size, 48, 8).xs == (0, 40)
    difference = np.abs(whole - tiled).max(axis=-1)
    band = np.zeros(88 * 4, dtype=bool)
    band[(48 - RRDB_RADIUS) * 4:(40 + RRDB_RADIUS) * 4] = True  # input 28..60: the overlap 40..48 and its reach
    away = ~band[:, None] & ~band[None, :]
    assert difference[away].max() <= 1
    seams = ~away
    assert difference[seams].max() <= 20 and difference[seams].mean() <= 1.0
    overlap = np.zeros(88 * 4, dtype=bool)
    overlap[40 * 4:48 * 4] = True
    assert difference[overlap[:, None] | overlap[None, :]].mean() <= 3.0
    assert difference[seams].max() > 0  # the band does differ: the network saw the tile borders there


def test_progress_is_called_after_each_tile_and_raising_stops_between_tiles(
        library: UpscalerLibrary, picture: Image.Image) -> None:
    calls: list[tuple[int, int]] = []
    library.upscale(picture, "4x_tiny_esrgan", scale=4, tile=48, overlap=8, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]

    seen: list[int] = []

    def cancel_after_two(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        library.upscale(picture, "4x_tiny_esrgan", scale=4, tile=48, overlap=8, progress=cancel_after_two)
    assert seen == [1, 2]

    passes: list[tuple[int, int]] = []  # 40x40 -> 80x80 -> 160x160 with a 2x model: 4 tiles, then 9
    library.upscale(picture.crop((0, 0, 40, 40)), "RealESRGAN_x2_tiny", scale=4, tile=32, overlap=8,
                    progress=lambda d, t: passes.append((d, t)))
    assert count_tiles((40, 40), 32, 8) == 4 and count_tiles((80, 80), 32, 8) == 9
    assert passes == [(n, 13) for n in range(1, 14)]
    assert library.upscale(picture, "Lanczos", scale=2, progress=lambda d, t: calls.append((-1, -1))).size == (176, 176)
    assert calls[-1] == (4, 4)  # built-ins have no tiles to report


def test_bad_tilings_are_refused(library: UpscalerLibrary, picture: Image.Image) -> None:
    with pytest.raises(ValueError, match="tile overlap must be 0 or more and under half the tile size"):
        library.upscale(picture, "4x_tiny_esrgan", scale=2, tile=32, overlap=16)
    with pytest.raises(ValueError, match="tile size must be at least 16"):
        library.upscale(picture, "4x_tiny_esrgan", scale=2, tile=8)


# ----- picture modes -------------------------------------------------------------------------------

def test_rgba_keeps_its_alpha_and_grayscale_becomes_rgb(library: UpscalerLibrary, picture: Image.Image) -> None:
    small = picture.crop((0, 0, 24, 16))
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 24, dtype=np.uint8), (16, 1)), "L")
    rgba = small.copy()
    rgba.putalpha(alpha)
    result = library.upscale(rgba, "4x_tiny_esrgan", scale=4)
    assert result.mode == "RGBA" and result.size == (96, 64)
    assert np.array_equal(_pixels(result.getchannel("A")), _pixels(alpha.resize((96, 64), Image.Resampling.LANCZOS)))
    assert np.array_equal(_pixels(result.convert("RGB")), _pixels(library.upscale(small, "4x_tiny_esrgan", scale=4)))
    gray = small.convert("L")
    from_gray = library.upscale(gray, "4x_tiny_esrgan", scale=4)
    assert from_gray.mode == "RGB"
    assert np.array_equal(_pixels(from_gray), _pixels(library.upscale(gray.convert("RGB"), "4x_tiny_esrgan", scale=4)))


# ----- blending, caching, the manager --------------------------------------------------------------

def test_blend_mixes_a_model_with_a_second_upscaler(library: UpscalerLibrary, picture: Image.Image) -> None:
    small = picture.crop((0, 0, 20, 16))
    model = library.upscale(small, "4x_tiny_esrgan", scale=2)
    lanczos = small.resize((40, 32), Image.Resampling.LANCZOS)
    mixed = library.blend(small, "4x_tiny_esrgan", "lanczos", 0.5, scale=2)
    assert np.array_equal(_pixels(mixed), _pixels(Image.blend(model, lanczos, 0.5)))
    assert np.array_equal(_pixels(library.blend(small, "4x_tiny_esrgan", "Lanczos", 0, scale=2)), _pixels(model))
    assert library.blend(small, "None", "4x_tiny_esrgan", 1.0, scale=2).size == (20, 16)
    calls: list[tuple[int, int]] = []
    library.blend(picture, "4x_tiny_esrgan", "SwinIR_x2_tiny", 0.3, scale=2, tile=48, overlap=8,
                  progress=lambda d, t: calls.append((d, t)))
    assert calls == [(n, 8) for n in range(1, 9)]  # 4 tiles of each model
    with pytest.raises(ValueError, match="visibility must be between 0 and 1"):
        library.blend(small, "4x_tiny_esrgan", "Lanczos", 1.5, scale=2)


def test_the_last_two_models_stay_loaded_and_unload_drops_them(models_root: Path) -> None:
    own = UpscalerLibrary(models_root)
    small = Image.new("RGB", (16, 16), (120, 80, 40))
    for name in ("4x_tiny_esrgan", "RealESRGAN_x2_tiny", "SwinIR_x2_tiny"):
        own.upscale(small, name, scale=2)
    assert [path.stem for path in own.loaded()] == ["RealESRGAN_x2_tiny", "SwinIR_x2_tiny"]
    own.upscale(small, "RealESRGAN_x2_tiny", scale=2)
    assert [path.stem for path in own.loaded()] == ["SwinIR_x2_tiny", "RealESRGAN_x2_tiny"]
    own.unload()
    assert own.loaded() == []


def test_half_precision_only_on_a_gpu_for_models_that_support_it(library: UpscalerLibrary) -> None:
    on_gpu = UpscalerLibrary(library.models_dir, device="cuda", dtype=torch.float16)
    esrgan, swinir = library.model(library.find("4x_tiny_esrgan")), library.model(library.find("SwinIR_x2_tiny"))
    assert on_gpu._run_dtype(esrgan) == torch.float16
    assert on_gpu._run_dtype(swinir) == torch.float32  # spandrel: SwinIR does not support fp16
    assert library._run_dtype(esrgan) == torch.float32  # the CPU runs fp32
    assert esrgan.dtype == torch.float32 and esrgan.device.type == "cpu"


def test_the_model_manager_owns_an_upscaler_library(models_root: Path) -> None:
    config = EngineConfig(models_dir=models_root, device="cpu")
    manager = ModelManager(config, ModelRegistry(models_root))
    assert isinstance(manager.upscalers, UpscalerLibrary) and manager.upscalers.models_dir == models_root
    manager.upscalers.upscale(Image.new("RGB", (8, 8)), "4x_tiny_esrgan", scale=4)
    assert len(manager.upscalers.loaded()) == 1
    manager.unload_all()
    assert manager.upscalers.loaded() == []
