"""Textual-inversion files: the forms read, what is refused, fitting a model, and the registry's listing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from app.engine.embeddings import (
    EmbeddingFormatError,
    EmbeddingMismatch,
    TextualInversion,
    read_embedding,
)
from app.engine.registry import ModelRegistry

_RAN: list[str] = []


def _mark_ran() -> None:
    _RAN.append("ran")


class Sneaky:
    """Pickled as "call _mark_ran on load": a stand-in for a pickle that runs code."""

    def __reduce__(self):
        return (_mark_ran, ())


def _vectors(n: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def _sha12(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _a1111_pt(path: Path, vectors: torch.Tensor, **extra: object) -> Path:
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.nn.Parameter(vectors.clone())},
        "name": "whatever-it-was-trained-as",
        **extra,
    }
    torch.save(data, path)
    return path


# ----- forms -------------------------------------------------------------------------------------
def test_a1111_pt_needs_allow_pickle_then_reads_vectors_and_metadata(tmp_path: Path) -> None:
    written = _vectors(3, 768)
    path = _a1111_pt(tmp_path / "EasyNegative.pt", written, step=1500, sd_checkpoint_name="v1-5-pruned")
    with pytest.raises(EmbeddingFormatError, match="--allow-pickle") as refused:
        read_embedding(path)
    assert "EasyNegative.pt" in str(refused.value)

    ti = read_embedding(path, allow_pickle=True)
    assert ti.name == "EasyNegative"
    assert ti.path == path
    assert set(ti.vectors) == {"clip"}
    vectors = ti.vectors["clip"]
    assert type(vectors) is torch.Tensor and not vectors.requires_grad
    assert vectors.dtype == torch.float32 and vectors.device.type == "cpu" and vectors.is_contiguous()
    assert torch.equal(vectors, written)
    assert (ti.vector_count, ti.widths, ti.family_label) == (3, (768,), "SD 1.x")
    assert (ti.step, ti.checkpoint_name) == (1500, "v1-5-pruned")
    assert ti.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ti.short_hash == _sha12(path)


def test_older_pt_with_top_level_emb_params(tmp_path: Path) -> None:
    written = _vectors(2, 1024)
    path = tmp_path / "old-style.pt"
    torch.save({"emb_params": written, "step": 20}, path)
    ti = read_embedding(path, allow_pickle=True)
    assert torch.equal(ti.vectors["clip"], written)
    assert (ti.name, ti.vector_count, ti.widths, ti.family_label, ti.step) == ("old-style", 2, (1024,), "SD 2.x", 20)
    assert ti.checkpoint_name is None


def test_safetensors_emb_params_is_read_as_float32(tmp_path: Path) -> None:
    written = _vectors(4, 1024).to(torch.float16)
    path = tmp_path / "bad-hands-5.safetensors"
    save_file({"emb_params": written}, path)
    ti = read_embedding(path)
    assert ti.vectors["clip"].dtype == torch.float32
    assert torch.equal(ti.vectors["clip"], written.float())
    assert (ti.name, ti.vector_count, ti.widths, ti.family_label) == ("bad-hands-5", 4, (1024,), "SD 2.x")
    assert (ti.step, ti.checkpoint_name) == (None, None)
    assert ti.short_hash == _sha12(path)


def test_sdxl_safetensors_pair(tmp_path: Path) -> None:
    clip_l, clip_g = _vectors(2, 768, 1), _vectors(2, 1280, 2)
    path = tmp_path / "sdxl-neg.safetensors"
    save_file({"clip_l": clip_l, "clip_g": clip_g}, path)
    ti = read_embedding(path)
    assert set(ti.vectors) == {"clip_l", "clip_g"}
    assert torch.equal(ti.vectors["clip_l"], clip_l) and torch.equal(ti.vectors["clip_g"], clip_g)
    assert (ti.vector_count, ti.widths, ti.family_label) == (2, (768, 1280), "SDXL")
    assert ti.short_hash == _sha12(path)


def test_sdxl_pair_with_different_vector_counts_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "uneven.safetensors"
    save_file({"clip_l": _vectors(2, 32), "clip_g": _vectors(3, 48)}, path)
    with pytest.raises(EmbeddingFormatError, match="uneven.safetensors.*2 vectors.*3"):
        read_embedding(path)
    half = tmp_path / "half.safetensors"
    save_file({"clip_l": _vectors(2, 32)}, half)
    with pytest.raises(EmbeddingFormatError, match="half.safetensors.*no clip_g"):
        read_embedding(half)


def test_diffusers_bin_with_one_token_and_a_1d_vector(tmp_path: Path) -> None:
    written = torch.randn(32)
    path = tmp_path / "learned_embeds.bin"
    torch.save({"<cat-toy>": written}, path)
    with pytest.raises(EmbeddingFormatError, match="--allow-pickle"):
        read_embedding(path)
    ti = read_embedding(path, allow_pickle=True)
    assert ti.vectors["clip"].shape == (1, 32)
    assert torch.equal(ti.vectors["clip"][0], written)
    assert (ti.name, ti.vector_count, ti.widths, ti.family_label) == ("learned_embeds", 1, (32,), "a 32-wide text encoder")


def test_diffusers_safetensors_with_one_token(tmp_path: Path) -> None:
    written = _vectors(5, 48)
    path = tmp_path / "my-token.safetensors"
    save_file({"<my-token>": written}, path)
    ti = read_embedding(path)
    assert torch.equal(ti.vectors["clip"], written)
    assert (ti.vector_count, ti.widths) == (5, (48,))


def test_sdxl_style_label_for_other_widths(tmp_path: Path) -> None:
    path = tmp_path / "tiny-xl.safetensors"
    save_file({"clip_l": _vectors(1, 32), "clip_g": _vectors(1, 48)}, path)
    assert read_embedding(path).family_label == "SDXL-style (32+48)"


# ----- fitting a model ---------------------------------------------------------------------------
def _one(tmp_path: Path, width: int, name: str = "tiny") -> TextualInversion:
    path = tmp_path / f"{name}.safetensors"
    save_file({"emb_params": _vectors(2, width)}, path)
    return read_embedding(path)


def _pair(tmp_path: Path, widths: tuple[int, int], name: str = "tiny-xl") -> TextualInversion:
    path = tmp_path / f"{name}.safetensors"
    save_file({"clip_l": _vectors(2, widths[0]), "clip_g": _vectors(2, widths[1])}, path)
    return read_embedding(path)


def test_vectors_for_a_fitting_model(tmp_path: Path) -> None:
    single = _one(tmp_path, 32)
    (vectors,) = single.vectors_for((32,))
    assert vectors is single.vectors["clip"]
    pair = _pair(tmp_path, (32, 48))
    first, second = pair.vectors_for((32, 48))
    assert first is pair.vectors["clip_l"] and second is pair.vectors["clip_g"]


def test_width_mismatch_names_both_widths(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingMismatch) as caught:
        _one(tmp_path, 32).vectors_for((48,))
    assert "tiny" in str(caught.value) and "32" in str(caught.value) and "48" in str(caught.value)

    with pytest.raises(EmbeddingMismatch) as caught:
        _one(tmp_path, 768, "EasyNegative").vectors_for((1024,))
    assert str(caught.value) == "EasyNegative is for SD 1.x (768 wide); this model's text encoder is 1024 wide"

    with pytest.raises(EmbeddingMismatch) as caught:
        _pair(tmp_path, (32, 48)).vectors_for((32, 64))
    assert "48" in str(caught.value) and "64" in str(caught.value)


def test_pair_on_one_encoder_and_single_on_two_encoders_are_mismatches(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingMismatch, match="tiny-xl.*one text encoder"):
        _pair(tmp_path, (32, 48)).vectors_for((32,))
    with pytest.raises(EmbeddingMismatch, match="tiny.*needs clip_l and clip_g"):
        _one(tmp_path, 32).vectors_for((32, 48))
    with pytest.raises(EmbeddingMismatch) as caught:
        _one(tmp_path, 768, "EasyNegative").vectors_for((768, 1280))
    assert str(caught.value) == "EasyNegative is for SD 1.x (768 wide); this SDXL model needs clip_l and clip_g vectors"
    assert issubclass(EmbeddingMismatch, ValueError)


# ----- refusals ----------------------------------------------------------------------------------
def test_pickle_holding_an_object_is_refused_even_when_pickles_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "sneaky.pt"
    torch.save({"string_to_param": {"*": _vectors(1, 32)}, "extra": Sneaky()}, path)
    with pytest.raises(EmbeddingFormatError, match=r"sneaky\.pt.*weights_only"):
        read_embedding(path, allow_pickle=True)
    assert _RAN == []


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.safetensors", b"\x13\x00\x00\x00\x00\x00\x00\x00not json at all, just junk bytes", "not a readable"),
        ("empty.safetensors", b"", "empty"),
        ("empty.pt", b"", "empty"),
        ("corrupt.pt", b"this is not a pickle", "weights_only"),
        ("notes.txt", b"EasyNegative", "not .txt"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EmbeddingFormatError, match=message) as caught:
        read_embedding(path, allow_pickle=True)
    assert name in str(caught.value)


def test_missing_file_and_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingFormatError, match="gone.safetensors"):
        read_embedding(tmp_path / "gone.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(EmbeddingFormatError, match="folder.safetensors is not a file"):
        read_embedding(tmp_path / "folder.safetensors")


def test_lora_and_other_many_tensor_files_are_refused(tmp_path: Path) -> None:
    lora = tmp_path / "style.safetensors"
    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }, lora)
    with pytest.raises(EmbeddingFormatError, match="style.safetensors looks like a LoRA"):
        read_embedding(lora)
    two = tmp_path / "two.safetensors"
    save_file({"a": _vectors(1, 32), "b": _vectors(1, 32)}, two)
    with pytest.raises(EmbeddingFormatError, match="two.safetensors holds 2 tensors"):
        read_embedding(two)
    extra = tmp_path / "extra.pt"
    torch.save({"emb_params": _vectors(1, 32), "other": _vectors(1, 32)}, extra)
    with pytest.raises(EmbeddingFormatError, match="extra.pt holds other tensors"):
        read_embedding(extra, allow_pickle=True)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ({"emb_params": torch.zeros(1, 2, 32)}, "shape"),
        ({"emb_params": torch.zeros(0, 32)}, "no vectors"),
        ({"emb_params": torch.zeros(2, 32, dtype=torch.int32)}, "floating-point"),
        ({"emb_params": torch.full((2, 32), float("nan"))}, "NaN"),
        ({}, "nothing|no tensors|holds 0"),
    ],
)
def test_bad_tensors_are_refused(tmp_path: Path, tensors: dict, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    save_file(tensors, path)
    with pytest.raises(EmbeddingFormatError, match=message):
        read_embedding(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.zeros(2, 32), "holds a Tensor, not a dict"),
        ([1, 2, 3], "holds a list"),
        ({"string_to_param": {"*": torch.zeros(1, 32), "+": torch.zeros(1, 32)}}, "2 entries"),
        ({"string_to_param": {"*": "not a tensor"}}, "not a tensor"),
        ({"<a>": torch.zeros(1, 32), "<b>": torch.zeros(1, 32)}, "holds 2 tensors"),
        ({3: torch.zeros(1, 32)}, "keyed by a int"),
    ],
)
def test_bad_pickles_are_refused(tmp_path: Path, data: object, message: str) -> None:
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    with pytest.raises(EmbeddingFormatError, match=message):
        read_embedding(path, allow_pickle=True)


# ----- registry ----------------------------------------------------------------------------------
def test_registry_lists_embeddings_and_caches_them_per_file_version(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    (folder / "negatives").mkdir(parents=True)
    (folder / ".trash").mkdir()
    save_file({"emb_params": _vectors(2, 32)}, folder / "zebra.safetensors")
    save_file({"emb_params": _vectors(1, 32)}, folder / "negatives" / "bad-hands.safetensors")
    _a1111_pt(folder / "EasyNegative.pt", _vectors(3, 32))
    torch.save({"<tok>": torch.randn(32)}, folder / "learned.bin")
    save_file({"emb_params": _vectors(1, 32)}, folder / ".trash" / "old.safetensors")
    (folder / "preview.png").write_bytes(b"png")
    (folder / "model.ckpt").write_bytes(b"ckpt")
    (folder / "notes.txt").write_text("x")

    registry = ModelRegistry(tmp_path)
    entries = registry.embeddings()
    assert [e.name for e in entries] == ["EasyNegative.pt", "learned.bin", "negatives/bad-hands.safetensors", "zebra.safetensors"]
    assert [e.kind for e in entries] == ["pickle", "pickle", "single_file", "single_file"]
    assert ModelRegistry(tmp_path / "nowhere").embeddings() == []

    path = folder / "zebra.safetensors"
    first = registry.textual_inversion(path, allow_pickle=False)
    assert registry.textual_inversion(path, allow_pickle=False) is first
    assert registry.textual_inversion(path, allow_pickle=True) is first  # the flag does not matter for safetensors

    changed = _vectors(4, 32, seed=9)
    save_file({"emb_params": changed}, path)
    second = registry.textual_inversion(path, allow_pickle=False)
    assert second is not first
    assert torch.equal(second.vectors["clip"], changed) and second.short_hash == _sha12(path)


def test_registry_reads_a_refused_pickle_once_allowed(tmp_path: Path) -> None:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    path = _a1111_pt(folder / "EasyNegative.pt", _vectors(3, 32))
    registry = ModelRegistry(tmp_path)
    with pytest.raises(EmbeddingFormatError, match="--allow-pickle"):
        registry.textual_inversion(path, allow_pickle=False)
    ti = registry.textual_inversion(path, allow_pickle=True)
    assert ti.vector_count == 3 and registry.textual_inversion(path, allow_pickle=True) is ti
    with pytest.raises(EmbeddingFormatError, match="--allow-pickle"):  # still refused where pickles are not allowed
        registry.textual_inversion(path, allow_pickle=False)
    path.unlink()
    with pytest.raises(EmbeddingFormatError, match="EasyNegative.pt"):
        registry.textual_inversion(path, allow_pickle=True)
