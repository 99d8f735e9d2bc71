"""Face restoration, offline on the CPU: the Haar detector on a real photo (scikit-image's astronaut, which
ships inside its wheel), restorer files found and named, and faces restored and pasted back.

The restorer used for pasting is a RestoreFormer with random weights, made small (32 channels, 1 block a
level, an 8-entry codebook: 0.5 M weights, 2 MB) so a 512x512 face runs in about 3 s on two CPU cores;
spandrel reads those sizes from the tensors. GFPGAN and CodeFormer have fixed sizes in spandrel (87 M and
94 M weights, 10-15 s a face here), so they are checked once each, in memory, in the slow tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from app.engine.face_detect import FaceBox, HaarFaceDetector
from app.engine.face_paste import crop_face, face_square, feather_mask, paste_face
from app.engine.face_restore import (
    FaceRestoreError,
    FaceRestorerLibrary,
    compute_dtype,
    forward_face,
    identify_face_model,
)
from app.engine.spandrel_import import import_spandrel
from restoration_fixtures import tiny_restoreformer_state

skimage_data = pytest.importorskip("skimage.data")

# Points on the astronaut's face (512x512 photo): her eyes and the middle of her mouth.
ASTRONAUT_EYES_AND_MOUTH = ((203, 103), (243, 103), (224, 140))


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skimage_data.astronaut())


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def tiny_restoreformer() -> dict[str, torch.Tensor]:
    return tiny_restoreformer_state()


@pytest.fixture()
def library_with(tmp_path: Path, tiny_restoreformer):
    """A library over a fresh models folder holding the tiny RestoreFormer as models/GFPGAN/<stem>.safetensors."""
    def build(stem: str = "tiny_restoreformer", *, allow_pickle: bool = False) -> FaceRestorerLibrary:
        folder = tmp_path / "models" / "GFPGAN"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tiny_restoreformer, folder / f"{stem}.safetensors")
        return FaceRestorerLibrary(tmp_path / "models", allow_pickle=allow_pickle, device=torch.device("cpu"),
                                   dtype=torch.float32)
    return build


@pytest.fixture(scope="module")
def restored_fully(astronaut, tmp_path_factory, tiny_restoreformer):
    """The astronaut restored at visibility 1 and 0.5 by one library (the model loads once)."""
    folder = tmp_path_factory.mktemp("restore") / "models" / "facerestore_models"
    folder.mkdir(parents=True)
    save_file(tiny_restoreformer, folder / "tiny.safetensors")
    library = FaceRestorerLibrary(folder.parent, allow_pickle=False, device=torch.device("cpu"), dtype=torch.float32)
    calls: list[tuple[int, int]] = []
    full, full_count = library.restore(astronaut, "RestoreFormer", visibility=1.0, progress=lambda *a: calls.append(a))
    half, half_count = library.restore(astronaut, "tiny", visibility=0.5)
    return library, (full, full_count), (half, half_count), calls


def _contains(box: FaceBox, point: tuple[int, int]) -> bool:
    return box.x <= point[0] < box.x + box.width and box.y <= point[1] < box.y + box.height


def _square_mask(shape: tuple[int, int], box: FaceBox) -> np.ndarray:
    left, top, side = face_square(box)
    inside = np.zeros(shape, dtype=bool)
    inside[max(top, 0):top + side, max(left, 0):left + side] = True
    return inside


# ----- detection ---------------------------------------------------------------------------------
def test_detector_finds_the_astronauts_face(astronaut, detector):
    boxes = detector.detect(astronaut)
    assert boxes, "no face found on the astronaut"
    face = boxes[0]
    assert all(_contains(face, point) for point in ASTRONAUT_EYES_AND_MOUTH), face
    assert 60 <= face.width <= 160 and 60 <= face.height <= 160, face
    assert boxes == sorted(boxes, key=lambda box: -box.area)


def test_detector_gives_boxes_in_the_pixels_of_a_large_picture(astronaut, detector):
    """A picture over 1024 pixels is searched shrunk; the box comes back in the picture's own pixels."""
    large = astronaut.resize((2048, 2048), Image.Resampling.BICUBIC)
    face = detector.detect(large)[0]
    assert all(_contains(face, (4 * x, 4 * y)) for x, y in ASTRONAUT_EYES_AND_MOUTH), face
    assert 240 <= face.width <= 640, face


@pytest.mark.parametrize("picture", ["flat", "noise"])
def test_detector_finds_no_face_where_there_is_none(detector, picture):
    rng = np.random.default_rng(1)
    pixels = (np.full((512, 640, 3), 128, np.uint8) if picture == "flat"
              else rng.integers(0, 256, (512, 640, 3), dtype=np.uint8))
    assert detector.detect(Image.fromarray(pixels)) == []


# ----- cutting and pasting -----------------------------------------------------------------------
def test_feather_mask_is_one_inside_and_fades_to_the_edges():
    mask = feather_mask(64)
    assert mask.shape == (64, 64) and mask[32, 32] == 1.0
    assert mask[0, 0] < 0.02 and mask[0, 32] < 0.02 and 0.0 < mask[4, 32] < 1.0
    assert np.array_equal(mask, mask.T) and np.array_equal(mask, mask[::-1, ::-1])


def test_crop_past_the_edge_repeats_edge_pixels_and_paste_leaves_the_outside_alone():
    picture = np.zeros((100, 100, 3), np.float32)
    picture[:, :50] = 200.0
    square = face_square(FaceBox(-10, 20, 40, 40))  # runs past the left edge
    crop = crop_face(picture, square, 32)
    assert crop.shape == (32, 32, 3) and np.all(crop[:, :4] == 200.0)
    before = picture.copy()
    paste_face(picture, np.full((32, 32, 3), 50.0, np.float32), square, strength=1.0)
    outside = ~_square_mask((100, 100), FaceBox(-10, 20, 40, 40))
    assert np.array_equal(picture[outside], before[outside])
    centre_y, centre_x = square.top + square.side // 2, max(square.left + square.side // 2, 0)
    assert picture[centre_y, centre_x, 0] == pytest.approx(50.0, abs=0.5)
    unchanged = before.copy()
    paste_face(unchanged, np.full((32, 32, 3), 50.0, np.float32), square, strength=0.0)
    assert np.array_equal(unchanged, before)


def test_face_square_frames_the_face_as_the_restorers_were_trained(astronaut, detector):
    """The astronaut's eyes and mouth land within 24 px (of 512) of where FFHQ's aligned faces have them."""
    left, top, side = face_square(detector.detect(astronaut)[0])
    ffhq_eyes_and_mouth = ((192, 240), (319, 240), (257, 371))  # facexlib's 512 template: eyes, mouth centre
    for (x, y), (want_x, want_y) in zip(ASTRONAUT_EYES_AND_MOUTH, ffhq_eyes_and_mouth):
        assert abs((x - left) * 512 / side - want_x) <= 24 and abs((y - top) * 512 / side - want_y) <= 24


# ----- files and names ---------------------------------------------------------------------------
def test_restorer_file_is_listed_with_its_architecture(library_with):
    library = library_with()
    (info,) = library.available()
    assert (info.name, info.architecture, info.error) == ("tiny_restoreformer", "RestoreFormer", None)
    assert info.path.parent.name == "GFPGAN" and info.usable


def test_pickle_restorer_needs_allow_pickle(tmp_path, tiny_restoreformer):
    folder = tmp_path / "models" / "Codeformer"
    folder.mkdir(parents=True)
    torch.save({"params_ema": tiny_restoreformer}, folder / "restoreformer_pickled.pth")  # as its authors save it
    torch.save({"x": torch.zeros(1)}, folder / "detection_Resnet50_Final.pth")  # facexlib's: not listed
    refused = FaceRestorerLibrary(tmp_path / "models", allow_pickle=False, device=torch.device("cpu"),
                                  dtype=torch.float32)
    (info,) = refused.available()
    assert info.architecture is None
    assert "restoreformer_pickled.pth is a pickle file" in info.error and "--allow-pickle" in info.error
    with pytest.raises(FaceRestoreError, match="--allow-pickle"):
        refused.find("restoreformer_pickled")
    allowed = FaceRestorerLibrary(tmp_path / "models", allow_pickle=True, device=torch.device("cpu"),
                                  dtype=torch.float32)
    (info,) = allowed.available()
    assert (info.name, info.architecture, info.error) == ("restoreformer_pickled", "RestoreFormer", None)


def test_files_that_are_not_restorers_say_what_they_are(tmp_path):
    from spandrel.architectures.Compact import Compact

    folder = tmp_path / "models" / "GFPGAN"
    folder.mkdir(parents=True)
    (folder / "garbage.safetensors").write_bytes(b"this is not a safetensors file at all")
    save_file({"weight": torch.zeros(3, 3)}, folder / "unknown.safetensors")
    save_file(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), folder / "2x_compact.safetensors")
    library = FaceRestorerLibrary(tmp_path / "models", allow_pickle=False, device=torch.device("cpu"),
                                  dtype=torch.float32)
    errors = {info.name: info.error for info in library.available()}
    assert "garbage.safetensors cannot be read" in errors["garbage"]
    assert "unknown.safetensors is not a model spandrel recognises" in errors["unknown"]
    assert "2x_compact.safetensors is a RealESRGAN Compact model, not a face restorer" in errors["2x_compact"]
    with pytest.raises(FaceRestoreError, match="No face restoration model is installed.*models/GFPGAN"):
        library.find("GFPGAN")


def test_find_by_stem_or_architecture_and_clear_messages(library_with, tmp_path):
    empty = FaceRestorerLibrary(tmp_path / "nothing", allow_pickle=False, device=torch.device("cpu"),
                                dtype=torch.float32)
    with pytest.raises(FaceRestoreError, match=r"No face restoration model is installed: put a "
                                               r"GFPGAN/CodeFormer/RestoreFormer \.safetensors in models/GFPGAN"):
        empty.find("CodeFormer")
    library = library_with("RestoreFormerPlusPlus")
    assert library.find("RestoreFormerPlusPlus").architecture == "RestoreFormer"
    assert library.find("restoreformer").name == "RestoreFormerPlusPlus"
    with pytest.raises(FaceRestoreError, match=r"No face restoration model called 'CodeFormer'\. Installed: "
                                               r"RestoreFormerPlusPlus \(RestoreFormer\)"):
        library.find("CodeFormer")
    with pytest.raises(FaceRestoreError, match="No face restoration model called"):
        library.restore(Image.new("RGB", (64, 64)), "GFPGAN")


# ----- restoring ---------------------------------------------------------------------------------
def test_restore_changes_only_the_face_square(astronaut, detector, restored_fully):
    _, (full, count), _, calls = restored_fully
    assert count == 1 and calls == [(1, 1)]
    assert full.size == astronaut.size and full.mode == "RGB"
    before, after = np.asarray(astronaut), np.asarray(full)
    inside = _square_mask(before.shape[:2], detector.detect(astronaut)[0])
    assert np.array_equal(after[~inside], before[~inside])
    diff = np.abs(after.astype(int) - before.astype(int)).max(axis=2)
    assert diff[inside].mean() > 10  # random weights: the face area is repainted


def test_visibility_blends_with_the_original(astronaut, restored_fully):
    library, (full, _), (half, half_count), _ = restored_fully
    before = np.asarray(astronaut).astype(float)
    full_change = np.abs(np.asarray(full) - before).mean()
    half_change = np.abs(np.asarray(half) - before).mean()
    assert half_count == 1
    assert half_change == pytest.approx(full_change / 2, rel=0.05)
    untouched, count = library.restore(astronaut, "tiny", visibility=0.0)
    assert count == 0 and np.array_equal(np.asarray(untouched), np.asarray(astronaut))
    with pytest.raises(ValueError, match="between 0 and 1"):
        library.restore(astronaut, "tiny", visibility=1.5)


def test_picture_without_a_face_comes_back_unchanged(restored_fully):
    library = restored_fully[0]
    noise = Image.fromarray(np.random.default_rng(2).integers(0, 256, (384, 512, 3), dtype=np.uint8))
    result, count = library.restore(noise, "tiny")
    assert count == 0 and np.array_equal(np.asarray(result), np.asarray(noise))
    library.unload()


def test_restorers_run_in_bf16_on_cuda_and_fp32_on_the_cpu(monkeypatch):
    face_model = SimpleNamespace(supports_half=False, supports_bfloat16=True)  # as spandrel describes all three
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compute_dtype(face_model, cpu, torch.float16) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert compute_dtype(face_model, cuda, torch.float16) == torch.bfloat16
    assert compute_dtype(SimpleNamespace(supports_half=True, supports_bfloat16=True), cuda, torch.float16) == torch.float16
    assert compute_dtype(face_model, cuda, torch.float32) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # before Ampere
    assert compute_dtype(face_model, cuda, torch.float16) == torch.float32


# ----- the full-size architectures ---------------------------------------------------------------
def _full_size(architecture: str) -> torch.nn.Module:
    """A random-weight network of ``architecture`` as spandrel builds it from a state dict of that shape."""
    torch.manual_seed(0)
    if architecture == "GFPGAN":
        from spandrel.architectures.GFPGAN import GFPGAN

        network = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None,
                         fix_decoder=False, num_mlp=8, input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    else:
        import_spandrel()
        from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

        network = CodeFormer()
    state = network.state_dict()
    assert identify_face_model(state, f"{architecture}.safetensors") == architecture
    return import_spandrel().ModelLoader().load_from_state_dict(state).model.eval()


@pytest.mark.slow
def test_gfpgan_runs_as_its_own_code_calls_it(astronaut):
    """One 512 face through a full-size GFPGAN, taking the noise stored in the file (so a face restores the
    same way every time) and giving the picture, not the intermediate ones."""
    model = _full_size("GFPGAN")
    noises: list[torch.Tensor] = []
    model.stylegan_decoder.style_conv1.register_forward_pre_hook(
        lambda module, args, kwargs: noises.append(kwargs["noise"]), with_kwargs=True)
    with torch.inference_mode():
        restored = forward_face(model, "GFPGAN", _as_batch(astronaut), 0.5)
    assert restored.shape == (1, 3, 512, 512) and torch.isfinite(restored).all()
    assert noises == [model.stylegan_decoder.noises.noise0] and noises[0] is not None


@pytest.mark.slow
def test_codeformer_weight_reaches_the_network(astronaut):
    """CodeFormer's fidelity weight is what its fusion layers get (spandrel's own call leaves it at 0.5)."""
    model = _full_size("CodeFormer")
    weights: list[float] = []
    model.fuse_convs_dict["32"].register_forward_pre_hook(lambda module, args: weights.append(args[2]))
    with torch.inference_mode():
        restored = forward_face(model, "CodeFormer", _as_batch(astronaut), 0.7)
    assert restored.shape == (1, 3, 512, 512) and torch.isfinite(restored).all()
    assert weights == [0.7]


def _as_batch(picture: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(picture, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
