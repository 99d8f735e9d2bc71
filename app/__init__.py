"""LoRA Studio: a local Stable Diffusion workbench on diffusers."""

from app.torchvision_operators import make_torchvision_importable

make_torchvision_importable()  # before transformers or spandrel import torchvision
