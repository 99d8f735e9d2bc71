"""A1111 "parameters" text (infotext): write it exactly as A1111 1.10 does, read it back.

Grammar (A1111 ``modules/processing.py`` ``create_infotext``, ``modules/infotext_utils.py``)::

    <prompt, may span lines>
    Negative prompt: <negative prompt, may span lines>     (line left out when empty)
    Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, ...

The last line is ``", ".join(f"{key}: {quote(value)}")`` over the keys whose value is not None, in
A1111's fixed key order, then the extra parameters in the order A1111 adds them, then ``Version``.
A value holding ``,``, ``:`` or a newline is JSON-quoted. On reading, the last line counts as
parameters only when the parameter regex finds at least 3 matches in it; ``WxH`` values are split
into ``<Key>-1`` / ``<Key>-2``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType

from app.engine.requests import SAME_CHECKPOINT, SAME_SAMPLER, SAME_SCHEDULER, GenerationRequest
from app.engine.samplers import AUTOMATIC, infotext_schedule_type, resolve_sampler

DEFAULT_VERSION = "lora-studio 0.1.0"

# A1111's parser, verbatim in meaning: key, then a JSON-quoted value or anything up to a comma.
PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
IMAGE_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE_PROMPT_PREFIX = "Negative prompt:"

# The keys of A1111 1.10's create_infotext in order. An extra parameter with one of these names
# takes this slot (as a Python dict update keeps a key's place); other extras follow in order.
FIXED_KEYS: tuple[str, ...] = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)

# Extras A1111 adds after LoRA activation (prompt encoding, sampling), so after "Lora hashes".
AFTER_LORA_KEYS: tuple[str, ...] = (
    "TI hashes",
    "Emphasis",
    "Schedule max sigma",
    "Schedule min sigma",
    "Schedule rho",
    "Beta schedule alpha",
    "Beta schedule beta",
    "Hires schedule type",  # set by the sampler of the hires pass, after everything of the first
)

# What A1111's parse_generation_parameters fills in for a key the text lacks.
A1111_DEFAULTS: Mapping[str, str] = MappingProxyType(
    {
        "Clip skip": "1",
        "Hires resize-1": "0",
        "Hires resize-2": "0",
        "Hires sampler": SAME_SAMPLER,
        "Hires schedule type": SAME_SCHEDULER,
        "Hires checkpoint": SAME_CHECKPOINT,
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": "32",
        "RNG": "GPU",
        "Schedule type": AUTOMATIC,
        "Schedule max sigma": "0",
        "Schedule min sigma": "0",
        "Schedule rho": "0",
        "VAE Encoder": "Full",
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
        "Emphasis": "Original",
    }
)

_LORA_NAME_DROP = str.maketrans("", "", ":,")  # A1111 strips these from names in "Lora hashes"


def quote(value: object) -> str:
    """A1111's ``infotext_utils.quote``: JSON-quote text holding ``,``, ``:`` or a newline."""
    text = _value_text(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A1111's ``unquote``: decode a JSON-quoted value, leave anything else as it is."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded = json.loads(text)
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def _value_text(value: object) -> str:
    """A number as A1111's UI sends it (7.0 -> "7", 6.5 -> "6.5"); anything else as str()."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def format_lora_hashes(lora_hashes: Mapping[str, str]) -> str:
    """The "Lora hashes" value: ``name: hash, name: hash`` with ``:`` and ``,`` dropped from names."""
    return ", ".join(f"{name.translate(_LORA_NAME_DROP)}: {short}" for name, short in lora_hashes.items())


def _inpaint_params(request: GenerationRequest) -> dict[str, object]:
    """Inpaint parameters in the order A1111's img2img tab adds them, each only when A1111 writes it."""
    params: dict[str, object] = {"Mask blur": getattr(request, "mask_blur", 4)}  # always, from the tab
    if getattr(request, "invert_mask", False):
        params["Mask mode"] = "Inpaint not masked"
    if getattr(request, "inpaint_area", "Whole picture") == "Only masked":
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = getattr(request, "masked_padding", 32)
    if getattr(request, "masked_content", "original") == "fill":
        params["Masked content"] = "fill"
    return params


def _canonical_sampler(request: GenerationRequest) -> tuple[str, str]:
    """(Sampler, Schedule type) as A1111 writes them; the raw values if they do not resolve."""
    try:
        sampler, schedule = resolve_sampler(request.sampler, request.schedule_type)
    except ValueError:
        return request.sampler, request.schedule_type or AUTOMATIC
    return sampler, infotext_schedule_type(sampler, schedule)


def format_infotext(
    request: GenerationRequest,
    *,
    seed: int,
    model_name: str,
    model_hash: str | None,
    vae_name: str | None = None,
    vae_hash: str | None = None,
    lora_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, object] | None = None,
    version: str = DEFAULT_VERSION,
    rng: str = "CPU",
) -> str:
    """The A1111 1.10 "parameters" text for one image of ``request`` made with ``seed``.

    The prompt is written as given (LoRA tags stay in it). ``extra`` holds further A1111
    parameters (``Hires upscale``, ``TI hashes``...), placed where A1111 puts them; a value of
    None leaves its key out. ``rng`` is A1111's "Random number generator source" the noise came from:
    "CPU" (the engine's default, ``--rng cpu``: a seed gives the same noise on any machine) or "GPU"
    (``--rng gpu`` on a CUDA device), A1111's default, which a text says by leaving the key out.
    """
    sampler, schedule = _canonical_sampler(request)
    params: dict[str, object | None] = dict.fromkeys(FIXED_KEYS)
    params.update(
        {
            "Steps": request.steps,
            "Sampler": sampler,
            "Schedule type": schedule,
            "CFG scale": request.cfg_scale,
            "Seed": seed,
            "Face restoration": request.face_restorer or None if request.restore_faces else None,
            "Size": f"{request.width}x{request.height}",
            "Model hash": model_hash or None,
            "Model": model_name or None,
            "VAE hash": vae_hash or None,
            "VAE": vae_name or None,
            "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
            "Tiling": True if getattr(request, "tiling", False) else None,
            "RNG": rng if rng != "GPU" else None,  # A1111 leaves out its default
        }
    )
    if request.task in ("img2img", "inpaint") or getattr(request, "enable_hr", False):
        params["Denoising strength"] = getattr(request, "denoising_strength", None)

    extras: dict[str, object | None] = {}
    if request.task == "inpaint":
        extras.update(_inpaint_params(request))
    late: dict[str, object | None] = {}
    for key, value in (extra or {}).items():
        (late if key in AFTER_LORA_KEYS else extras)[key] = value
    if lora_hashes:
        extras["Lora hashes"] = format_lora_hashes(lora_hashes)
    extras.update(late)
    params.update(extras)  # a fixed key keeps its slot, new keys follow in order
    params.pop("Version", None)
    params["Version"] = version or None

    last_line = ", ".join(
        key if key == value else f"{key}: {quote(value)}" for key, value in params.items() if value is not None
    )
    negative = f"\n{NEGATIVE_PROMPT_PREFIX} {request.negative_prompt}" if request.negative_prompt else ""
    return f"{request.prompt}{negative}\n{last_line}".strip()


def parse_infotext(text: str, *, with_defaults: bool = False) -> dict[str, str]:
    """The fields of an A1111 "parameters" text, by A1111's rules.

    Returns ``Prompt``, ``Negative prompt`` and each ``Key: value`` of the last line (quoted
    values decoded; ``WxH`` split into ``Key-1``/``Key-2``). The last line counts only with at
    least 3 matches, otherwise it is part of the prompt. Each prompt line is stripped, as A1111
    does. ``with_defaults`` adds A1111's values for missing keys (Clip skip 1, Schedule type
    Automatic, Inpaint area Whole picture...).
    """
    *lines, last_line = text.strip().split("\n")
    if len(PARAM_RE.findall(last_line)) < 3:
        lines.append(last_line)
        last_line = ""

    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX):].strip()
        target = negative if in_negative else prompt
        if target or line:  # A1111 drops empty lines before the first text
            target.append(line)

    result: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in PARAM_RE.findall(last_line):
        if not value:
            continue  # A1111 fails on an empty value and skips the key
        if value[0] == '"' and value[-1] == '"':
            value = unquote(value)
        size = IMAGE_SIZE_RE.match(value)
        if size is not None:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    if with_defaults:
        for key, value in A1111_DEFAULTS.items():
            result.setdefault(key, value)
    return result


__all__ = [
    "A1111_DEFAULTS",
    "DEFAULT_VERSION",
    "format_infotext",
    "format_lora_hashes",
    "parse_infotext",
    "quote",
    "unquote",
]
