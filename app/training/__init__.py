"""LoRA training: dataset, trainer (peft + accelerate), kohya export. ``python -m app.training --help``."""
