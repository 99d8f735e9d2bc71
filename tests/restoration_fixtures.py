"""Small upscaler and face-restorer networks of the real architectures (spandrel's own classes) with seeded
random weights, for the tests that need model files: a few MB each, quick on two CPU cores."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from app.engine.spandrel_import import import_spandrel


def esrgan_state(scale: int, *, seed: int, shuffle: bool = False) -> dict[str, torch.Tensor]:
    """A 16-filter, 1-block RRDB network (old ESRGAN layout). Random weights leave the output near 0, where
    it clamps flat; a stronger last layer centred on 0.5 gives pictures with detail to compare."""
    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    if shuffle:  # Real-ESRGAN x2plus: pixel-unshuffle by 2, then a 4x network
        network = ESRGAN(in_nc=12, out_nc=3, num_filters=16, num_blocks=1, scale=4, shuffle_factor=2)
    else:
        network = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=scale)
    state = {k: v.clone() for k, v in network.state_dict().items()}
    last = max((k for k in state if k.endswith(".weight")), key=lambda k: int(k.split(".")[1]))
    state[last] *= 16
    state[last.replace("weight", "bias")].fill_(0.5)
    return state


def tiny_restoreformer_state() -> dict[str, torch.Tensor]:
    """A RestoreFormer made small (32 channels, 1 block a level, an 8-entry codebook: 0.5 M weights, 2 MB), so a
    512x512 face runs in about 3 s on two CPU cores; spandrel reads those sizes from the tensors."""
    import_spandrel()
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    model = RestoreFormer(n_embed=8, embed_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1, 1), num_res_blocks=1, z_channels=8)
    return {key: value.contiguous() for key, value in model.state_dict().items()}


def write_upscaler(models_dir: Path, name: str = "2x_tiny_esrgan", scale: int = 2, folder: str = "ESRGAN") -> Path:
    """A tiny RRDB upscaler file, models/<folder>/<name>.safetensors."""
    path = Path(models_dir) / folder / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(esrgan_state(scale, seed=scale), path)
    return path


def write_face_restorer(models_dir: Path, name: str = "tiny_restoreformer", folder: str = "facerestore_models") -> Path:
    """The tiny RestoreFormer as models/<folder>/<name>.safetensors."""
    path = Path(models_dir) / folder / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_restoreformer_state(), path)
    return path
