"""The registry: what it finds on disk, names, hashes, hub ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from app.engine.registry import ModelRegistry, is_hub_id


def _diffusers_folder(path: Path) -> None:
    (path / "unet").mkdir(parents=True)
    (path / "model_index.json").write_text("{}")
    (path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"unet weights")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    ckpt = tmp_path / "Stable-diffusion"
    _diffusers_folder(ckpt / "my-diffusers")
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "sub" / "model-a.safetensors").write_bytes(b"A" * 100)
    (ckpt / "old.ckpt").write_bytes(b"pickle")
    (ckpt / "notes.txt").write_text("not a model")
    (ckpt / ".hidden.safetensors").write_bytes(b"x")
    (tmp_path / "Lora").mkdir()
    (tmp_path / "Lora" / "style.safetensors").write_bytes(b"lora")
    (tmp_path / "VAE").mkdir()
    (tmp_path / "VAE" / "vae-ft.safetensors").write_bytes(b"vae")
    return tmp_path


def test_scan_finds_folders_and_files_but_not_their_insides(tree: Path) -> None:
    registry = ModelRegistry(tree)
    found = {(e.name, e.kind) for e in registry.checkpoints()}
    assert found == {("my-diffusers", "diffusers"), ("sub/model-a.safetensors", "single_file"), ("old.ckpt", "pickle")}
    assert [e.name for e in registry.loras()] == ["style.safetensors"]
    assert [e.name for e in registry.vaes()] == ["vae-ft.safetensors"]


def test_lookup_by_name_with_or_without_suffix_and_clear_error(tree: Path) -> None:
    registry = ModelRegistry(tree)
    assert registry.find_checkpoint("sub/model-a").path == tree / "Stable-diffusion" / "sub" / "model-a.safetensors"
    assert registry.find_lora("style").name == "style.safetensors"
    with pytest.raises(ValueError, match="No checkpoint called 'nothing'.*my-diffusers"):
        registry.find_checkpoint("nothing")
    with pytest.raises(ValueError, match="No LoRA"):
        registry.find_lora("nope")


def test_model_hash_is_a1111_sha256_prefix(tree: Path) -> None:
    registry = ModelRegistry(tree)
    entry = registry.find_checkpoint("sub/model-a.safetensors")
    assert registry.short_hash(entry) == hashlib.sha256(b"A" * 100).hexdigest()[:10]
    folder = registry.find_checkpoint("my-diffusers")
    assert registry.short_hash(folder) == hashlib.sha256(b"unet weights").hexdigest()[:10]


def test_hub_ids_are_recognised_but_paths_are_not(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree)
    registry = ModelRegistry(tree)
    assert registry.find_checkpoint("stabilityai/sdxl-turbo").kind == "hub"
    assert is_hub_id("runwayml/stable-diffusion-v1-5")
    for sneaky in ("a/..", "../etc", "Stable-diffusion/sub", "/etc/passwd", "a/b/c"):
        assert not is_hub_id(sneaky)
        with pytest.raises(ValueError):
            registry.find_checkpoint(sneaky)


def test_model_card_label_makes_the_title(tree: Path) -> None:
    card = tree / "Stable-diffusion" / "my-diffusers" / "lora_studio.json"
    card.write_text(json.dumps({"label": "demo"}))
    entry = ModelRegistry(tree).find_checkpoint("my-diffusers")
    assert entry.title == "my-diffusers (demo)"
    assert ModelRegistry(tree).find_checkpoint("my-diffusers (demo)") == entry
