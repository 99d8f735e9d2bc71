"""LoRA Studio: a local Stable Diffusion workbench on diffusers."""
