"""What a LoRA file is, read from its header: format, base-model family, rank, alpha, trigger words.

Formats (see shared/reference/formats.md, part B):
- kohya / A1111: ``lora_unet_...`` / ``lora_te_...`` / ``lora_te1_`` / ``lora_te2_`` names with
  ``.lora_down.weight``, ``.lora_up.weight`` and ``.alpha`` (LoCon convs included);
- diffusers / peft: ``unet.<path>.lora_A.weight`` / ``.lora_B.weight`` (``text_encoder.``,
  ``text_encoder_2.``), and the older ``...lora.down.weight`` attention-processor names;
- LyCORIS LoHa / LoKr / Tucker LoCon, which diffusers cannot apply: refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

FAMILIES = ("sd1", "sd2", "sdxl")
FAMILY_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "unknown": "unknown base"}

# Cross-attention key width of each family: the input size of an attn2.to_k LoRA down matrix.
_CONTEXT_WIDTH = {768: "sd1", 1024: "sd2", 2048: "sdxl"}
_DOWN_SUFFIXES = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight")
_UNSUPPORTED = {
    "hada_w1_a": "LoHa (LyCORIS)",
    "lokr_w1": "LoKr (LyCORIS)",
    "lokr_w1_a": "LoKr (LyCORIS)",
    "lora_mid": "LoCon with Tucker decomposition (LyCORIS)",
}


class LoraFormatError(ValueError):
    """A file LoRA Studio cannot apply; the message says what it is and why."""


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA file's header facts. ``layers`` counts adapted layers (one down matrix each)."""

    path: Path
    format: str  # "kohya" or "peft"
    family: str  # "sd1", "sd2", "sdxl" or "unknown"
    rank: int
    alpha: float | None  # None: no alpha stored (applied as alpha = rank)
    layers: int
    has_text_encoder: bool
    has_conv: bool
    trigger_words: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def family_label(self) -> str:
        return FAMILY_LABELS.get(self.family, self.family)

    def fits(self, family: str) -> bool:
        """False only when the file says it is for another base-model family."""
        return self.family == "unknown" or self.family == family


def inspect_lora(path: Path) -> LoraInfo:
    """Read a ``.safetensors`` LoRA's header (no tensor data but the small alphas)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise LoraFormatError(f"{path.name}: only .safetensors LoRA files are read (pickled .pt/.ckpt are not).")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = list(handle.keys())
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in keys}
            alphas = [float(handle.get_tensor(key).item()) for key in keys if key.endswith(".alpha")]
    except Exception as exc:  # SafetensorError, OSError: truncated or not safetensors at all
        raise LoraFormatError(f"{path.name} is not a readable .safetensors file: {exc}") from exc
    check_supported(keys, path.name)
    downs = [key for key in keys if key.endswith(_DOWN_SUFFIXES)]
    if not downs:
        raise LoraFormatError(f"{path.name} holds no LoRA layers (no lora_down / lora_A weights).")
    kohya = any(key.startswith(("lora_unet_", "lora_te")) for key in keys)
    rank = max(shapes[key][0] for key in downs)
    return LoraInfo(
        path=path,
        format="kohya" if kohya else "peft",
        family=detect_family(metadata, shapes),
        rank=rank,
        alpha=_alpha(metadata, alphas),
        layers=len(downs),
        has_text_encoder=any(key.startswith(("lora_te", "text_encoder")) for key in downs),
        has_conv=any(len(shapes[key]) == 4 for key in downs),
        trigger_words=trigger_words(metadata),
        metadata=metadata,
    )


def check_supported(keys: list[str], label: str) -> None:
    """Raise LoraFormatError for LyCORIS types diffusers cannot apply."""
    for key in keys:
        suffix = key.rsplit(".", 2)[-2] if key.endswith(".weight") else key.rsplit(".", 1)[-1]
        kind = _UNSUPPORTED.get(suffix)
        if kind:
            raise LoraFormatError(f"{label} is a {kind} file. LoRA Studio applies LoRA and LoCon files; "
                                  f"{kind.split(' ')[0]} is not supported yet.")


def detect_family(metadata: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> str:
    """Base-model family from kohya / ModelSpec metadata, else from key names and shapes."""
    version = metadata.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl"
    if version.startswith("sd_v2") or metadata.get("ss_v2") == "True":
        return "sd2"
    if version.startswith("sd_v1"):
        return "sd1"
    architecture = metadata.get("modelspec.architecture", "")
    for marker, family in (("stable-diffusion-xl", "sdxl"), ("stable-diffusion-v2", "sd2"),
                           ("stable-diffusion-v1", "sd1")):
        if architecture.startswith(marker):
            return family
    keys = shapes.keys()
    if any(key.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for key in keys):
        return "sdxl"
    for key, shape in shapes.items():
        if "attn2" in key and ("to_k" in key) and key.endswith(_DOWN_SUFFIXES) and len(shape) == 2:
            return _CONTEXT_WIDTH.get(shape[1], "unknown")
    return "unknown"


def _alpha(metadata: dict[str, str], alphas: list[float]) -> float | None:
    if alphas:
        return max(alphas, key=alphas.count)  # the common value; per-layer alphas are applied per layer
    try:
        return float(metadata["ss_network_alpha"])
    except (KeyError, ValueError):
        return None


def trigger_words(metadata: dict[str, str], limit: int = 8) -> tuple[str, ...]:
    """ModelSpec's trigger phrase, then the most frequent training tags (kohya ``ss_tag_frequency``)."""
    words: list[str] = []
    phrase = metadata.get("modelspec.trigger_phrase", "").strip()
    if phrase:
        words.append(phrase)
    try:
        frequency = json.loads(metadata.get("ss_tag_frequency", "{}"))
    except json.JSONDecodeError:
        frequency = {}
    counts: dict[str, int] = {}
    for tags in frequency.values() if isinstance(frequency, dict) else ():
        if isinstance(tags, dict):
            for tag, count in tags.items():
                if isinstance(count, (int, float)) and tag.strip():
                    counts[tag.strip()] = counts.get(tag.strip(), 0) + int(count)
    for tag, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if tag not in words:
            words.append(tag)
    return tuple(words[:limit])


def fold_adapter_alphas(state: dict, adapter_metadata: str) -> dict:
    """Scale each peft ``lora_B`` by its alpha / rank from diffusers' ``lora_adapter_metadata``.

    diffusers reads that metadata only when it opens the file itself; a state dict handed over from
    memory (our cache) would load with alpha = rank. Folding the factor into ``lora_B`` gives the
    same W + w * (alpha / rank) * B @ A, so the cached tensors load correctly.
    """
    try:
        config = json.loads(adapter_metadata)
    except json.JSONDecodeError as exc:
        raise LoraFormatError(f"unreadable lora_adapter_metadata: {exc}") from exc
    folded = dict(state)
    for key, up in state.items():
        if not key.endswith(".lora_B.weight"):
            continue
        component, _, rest = key.partition(".")
        module = rest[: -len(".lora_B.weight")]
        alpha = _pattern_value(config.get(f"{component}.alpha_pattern") or {}, module)
        if alpha is None:
            alpha = config.get(f"{component}.lora_alpha")
        down = state.get(key.replace(".lora_B.", ".lora_A."))
        if alpha is None or down is None:
            continue
        folded[key] = up * (float(alpha) / down.shape[0])
    return folded


def _pattern_value(patterns: dict, module: str) -> float | None:
    """peft's alpha_pattern: a key applies to modules whose path ends with it."""
    for pattern, value in patterns.items():
        if module == pattern or module.endswith("." + pattern):
            return value
    return None


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file's bytes after its header: the hash A1111 shows for LoRAs
    (12 hex digits of it in "Lora hashes") and kohya stores as ``sshs_model_hash``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        handle.seek(8 + header_size)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
