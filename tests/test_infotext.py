"""A1111 infotext: exact formatting, A1111's parsing rules, and requests back from text."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from app.engine.infotext import (
    format_infotext,
    format_lora_hashes,
    parse_infotext,
    quote,
)
from app.engine.infotext_fields import request_from_infotext
from app.engine.requests import (
    GenerationRequest,
    Img2ImgRequest,
    InpaintRequest,
    LoraSpec,
    Txt2ImgRequest,
)

# formats.md §3.3, character for character.
A1111_EXAMPLE = (
    "masterpiece, best quality, a red fox in a snowy forest, (detailed fur:1.2), <lora:fox_style_v2:0.8>\n"
    "Negative prompt: badhandv4, lowres, blurry, (worst quality:1.4)\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 832x1216, "
    "Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, "
    "Denoising strength: 0.35, Clip skip: 2, Hires upscale: 1.5, Hires steps: 12, Hires upscaler: 4x-UltraSharp, "
    'Lora hashes: "fox_style_v2: 1a2b3c4d5e6f", TI hashes: "badhandv4: 5e40d722fb7a", Version: v1.10.1'
)

TRICKY_PROMPT = (
    'a "quoted" cat, (masterpiece:1.2), [red:blue:0.5], <lora:my_style:0.7>\n'
    "second line: café, 日本語の猫 ✨, 100% {wild|card}\n"
    "Steps: 5, Sampler: Euler, CFG scale: 3, a line that only looks like parameters"
)
TRICKY_NEGATIVE = 'lowres, "bad hands": 1.4\nblurry, watermark: text, ñandú'


def _fields(request: GenerationRequest) -> dict[str, object]:
    """The fields an infotext carries (not images, masks, batch or LoRA specs)."""
    skip = {"init_image", "mask", "loras", "batch_count", "batch_size", "save", "resize_mode"}
    return {f.name: getattr(request, f.name) for f in dataclasses.fields(request) if f.name not in skip}


def test_formats_md_example_exactly() -> None:
    request = Txt2ImgRequest(
        prompt="masterpiece, best quality, a red fox in a snowy forest, (detailed fur:1.2), <lora:fox_style_v2:0.8>",
        negative_prompt="badhandv4, lowres, blurry, (worst quality:1.4)",
        steps=28,
        sampler="DPM++ 2M",
        schedule_type="Automatic",  # A1111 1.9+ writes the resolved "Karras"
        cfg_scale=6.5,
        width=832,
        height=1216,
        clip_skip=2,
        loras=(LoraSpec("fox_style_v2", 0.8),),
    )
    text = format_infotext(
        request,
        seed=3141592653,
        model_name="sd_xl_base_1.0",
        model_hash="31e35c80fc",
        vae_name="sdxl_vae.safetensors",
        vae_hash="235745af8d",
        lora_hashes={"fox_style_v2": "1a2b3c4d5e6f"},
        extra={
            "Hires upscale": 1.5,
            "Hires steps": 12,
            "Hires upscaler": "4x-UltraSharp",
            "TI hashes": "badhandv4: 5e40d722fb7a",  # A1111 adds it after the LoRA hashes
            "Denoising strength": 0.35,  # hires fix: takes its fixed slot before Clip skip
        },
        version="v1.10.1",
        rng="GPU",  # the example was made with A1111's default noise
    )
    assert text == A1111_EXAMPLE


def test_txt2img_string_by_hand() -> None:
    request = Txt2ImgRequest(prompt="a cat", sampler="Euler a", steps=20, cfg_scale=7.0, seed=-1)
    text = format_infotext(request, seed=1234, model_name="v1-5-pruned-emaonly", model_hash="6ce0161689")
    assert text == (
        "a cat\n"
        "Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x512, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, RNG: CPU, Version: lora-studio 0.1.0"
    )


def test_fused_sampler_is_written_split() -> None:
    request = Txt2ImgRequest(prompt="x", negative_prompt="y", sampler="DPM++ 2M SDE Karras", cfg_scale=7.5,
                             width=768, height=512, clip_skip=1)
    text = format_infotext(request, seed=7, model_name="m", model_hash=None, version="v1.10.1")
    assert text == (
        "x\nNegative prompt: y\n"
        "Steps: 20, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 7.5, Seed: 7, Size: 768x512, "
        "Model: m, RNG: CPU, Version: v1.10.1"
    )


def test_img2img_and_inpaint_strings_by_hand() -> None:
    img2img = Img2ImgRequest(prompt="a dog", negative_prompt="", steps=30, sampler="DPM++ 2M", schedule_type="Uniform",
                             cfg_scale=5.0, width=640, height=448, denoising_strength=0.6, clip_skip=2)
    assert format_infotext(img2img, seed=99, model_name="model", model_hash="abcdef0123") == (
        "a dog\n"
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Uniform, CFG scale: 5, Seed: 99, Size: 640x448, "
        "Model hash: abcdef0123, Model: model, Denoising strength: 0.6, Clip skip: 2, RNG: CPU, Version: lora-studio 0.1.0"
    )
    inpaint = InpaintRequest(prompt="a hat", negative_prompt="ugly", sampler="Euler", steps=20, cfg_scale=7,
                             denoising_strength=0.75, mask_blur=8, inpaint_area="Only masked", masked_padding=48,
                             masked_content="fill", invert_mask=True)
    text = format_infotext(inpaint, seed=5, model_name="inp", model_hash="1111111111",
                           lora_hashes={"hat,style:v2": "0123456789ab", "other": "ba9876543210"})
    assert text == (
        "a hat\nNegative prompt: ugly\n"
        "Steps: 20, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, "
        "Model hash: 1111111111, Model: inp, Denoising strength: 0.75, RNG: CPU, Mask blur: 8, "
        "Mask mode: Inpaint not masked, "
        "Inpaint area: Only masked, Masked area padding: 48, Masked content: fill, "
        'Lora hashes: "hatstylev2: 0123456789ab, other: ba9876543210", Version: lora-studio 0.1.0'
    )
    # A1111 writes only Mask blur for an inpaint with whole-picture, original content, no inversion.
    plain = InpaintRequest(prompt="p", mask_blur=0)
    assert ", Denoising strength: 0.75, RNG: CPU, Mask blur: 0, Version:" in format_infotext(
        plain, seed=1, model_name="m", model_hash=None
    )


def test_quote_rules() -> None:
    assert quote("plain text") == "plain text"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote('say "hi"\nnow') == '"say \\"hi\\"\\nnow"'
    assert quote("日本") == "日本"
    assert quote("日本, 猫") == '"日本, 猫"'  # ensure_ascii=False
    assert quote(7.0) == "7" and quote(6.5) == "6.5" and quote(3) == "3"
    assert format_lora_hashes({"a:b,c": "123"}) == "abc: 123"


def test_formats_md_example_parses() -> None:
    params = parse_infotext(A1111_EXAMPLE)
    assert params["Prompt"].endswith("(detailed fur:1.2), <lora:fox_style_v2:0.8>")
    assert params["Negative prompt"] == "badhandv4, lowres, blurry, (worst quality:1.4)"
    assert params["Steps"] == "28"
    assert params["Sampler"] == "DPM++ 2M"
    assert params["Schedule type"] == "Karras"
    assert params["CFG scale"] == "6.5"
    assert params["Seed"] == "3141592653"
    assert (params["Size-1"], params["Size-2"]) == ("832", "1216")
    assert "Size" not in params
    assert params["Model hash"] == "31e35c80fc"
    assert params["Model"] == "sd_xl_base_1.0"
    assert params["VAE hash"] == "235745af8d"
    assert params["VAE"] == "sdxl_vae.safetensors"
    assert params["Denoising strength"] == "0.35"
    assert params["Clip skip"] == "2"
    assert params["Hires upscale"] == "1.5"
    assert params["Hires steps"] == "12"
    assert params["Hires upscaler"] == "4x-UltraSharp"
    assert params["Lora hashes"] == "fox_style_v2: 1a2b3c4d5e6f"
    assert params["TI hashes"] == "badhandv4: 5e40d722fb7a"
    assert params["Version"] == "v1.10.1"

    request = request_from_infotext(A1111_EXAMPLE)
    assert isinstance(request, Txt2ImgRequest)
    assert request.model == "sd_xl_base_1.0"
    assert request.vae == "sdxl_vae.safetensors"
    assert (request.sampler, request.schedule_type) == ("DPM++ 2M", "Karras")
    assert (request.steps, request.cfg_scale, request.seed) == (28, 6.5, 3141592653)
    assert (request.width, request.height, request.clip_skip) == (832, 1216, 2)
    assert "<lora:fox_style_v2:0.8>" in request.prompt
    assert (request.enable_hr, request.hr_scale, request.hr_second_pass_steps, request.denoising_strength) == (
        True, 1.5, 12, 0.35)
    # 4x-UltraSharp is an upscaler model file: read as written; the engine looks it up in models/ at submit.
    assert request.hr_upscaler == "4x-UltraSharp"
    request.validate()


def test_short_last_line_is_prompt() -> None:
    text = "a photo of a cat\nSteps: 20, Sampler: Euler"
    params = parse_infotext(text)
    assert params["Prompt"] == text
    assert "Steps" not in params
    one_line = "portrait: detailed, style: oil"
    assert parse_infotext(one_line) == {"Prompt": one_line, "Negative prompt": ""}
    request = request_from_infotext(text)
    assert request.prompt == text
    assert request.steps == Txt2ImgRequest().steps


def test_multiline_prompt_and_negative() -> None:
    text = (
        "line one,\n  line two  \n\nline four\n"
        "Negative prompt: neg one\nneg two\n"
        "Steps: 10, Sampler: DDIM, CFG scale: 4, Seed: 3, Size: 64x128"
    )
    params = parse_infotext(text)
    assert params["Prompt"] == "line one,\nline two\n\nline four"  # A1111 strips each line
    assert params["Negative prompt"] == "neg one\nneg two"
    assert (params["Size-1"], params["Size-2"]) == ("64", "128")


def test_defaults_for_missing_keys() -> None:
    text = "x\nSteps: 12, Sampler: Euler a, CFG scale: 5, Seed: 8, Size: 512x768"
    assert "Clip skip" not in parse_infotext(text)
    with_defaults = parse_infotext(text, with_defaults=True)
    assert with_defaults["Clip skip"] == "1"
    assert with_defaults["Schedule type"] == "Automatic"
    assert with_defaults["Inpaint area"] == "Whole picture"
    assert with_defaults["Masked area padding"] == "32"
    inpaint = request_from_infotext(text, task="inpaint")
    assert isinstance(inpaint, InpaintRequest)
    assert inpaint.init_image is None and inpaint.mask is None
    assert (inpaint.clip_skip, inpaint.schedule_type) == (1, "Automatic")
    assert (inpaint.inpaint_area, inpaint.masked_padding, inpaint.masked_content, inpaint.invert_mask) == (
        "Whole picture", 32, "original", False
    )
    assert inpaint.denoising_strength == 0.75 and inpaint.mask_blur == 4
    assert inpaint.model is None


@pytest.mark.parametrize(
    ("sampler_text", "schedule_text", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "Exponential")),
        ("DPM2 a Karras", None, ("DPM2 a", "Karras")),
        ("Euler a", None, ("Euler a", "Automatic")),
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "Karras")),
        ("DDIM", "Karras", ("DDIM", "Automatic")),  # A1111 ignores the schedule for DDIM
        ("DPM++ SDE Karras", None, ("DPM++ SDE", "Karras")),
        ("DPM++ 2S a Karras", None, ("DPM++ 2S a", "Karras")),  # kept, so validate() can explain
        ("Euler a", "Karras", ("Euler a", "Karras")),
        ("Mystery sampler", None, ("Mystery sampler", "Automatic")),
    ],
)
def test_old_and_odd_sampler_names_parse(sampler_text: str, schedule_text: str | None, expected) -> None:
    schedule = f"Schedule type: {schedule_text}, " if schedule_text else ""
    text = f"a cat\nSteps: 20, Sampler: {sampler_text}, {schedule}CFG scale: 7, Seed: 1, Size: 512x512"
    request = request_from_infotext(text)
    assert (request.sampler, request.schedule_type) == expected


def test_unsupported_pasted_sampler_fails_validation_clearly() -> None:
    text = "a cat\nSteps: 20, Sampler: DPM++ 2S a Karras, CFG scale: 7, Seed: 1, Size: 512x512"
    with pytest.raises(ValueError, match="not available in LoRA Studio"):
        request_from_infotext(text).validate()


def test_unknown_keys_and_bad_numbers_are_ignored() -> None:
    text = (
        "x\nSteps: many, Sampler: Euler, CFG scale: 6, Seed: 4, Size: 512x512, Face restoration: CodeFormer, "
        "Some extension: \"a, b\", NGMS: 0.2, Version: v1.10.1"
    )
    request = request_from_infotext(text)
    assert request.steps == Txt2ImgRequest().steps
    assert (request.cfg_scale, request.seed, request.sampler) == (6.0, 4, "Euler")
    assert parse_infotext(text)["Some extension"] == "a, b"
    with pytest.raises(ValueError, match="Unknown task"):
        request_from_infotext(text, task="upscale")


def _round_trip(request: GenerationRequest, **kwargs: object) -> GenerationRequest:
    text = format_infotext(request, seed=request.seed, **kwargs)  # type: ignore[arg-type]
    back = request_from_infotext(text, task=request.task)
    assert type(back) is type(request)
    again = format_infotext(back, seed=back.seed, **kwargs)  # type: ignore[arg-type]
    assert again == text
    return back


def test_round_trip_txt2img() -> None:
    request = Txt2ImgRequest(
        prompt=TRICKY_PROMPT,
        negative_prompt=TRICKY_NEGATIVE,
        model="my,model: v2",
        vae="vae, fixed.safetensors",
        steps=37,
        cfg_scale=4.5,
        seed=4294967295,
        width=1024,
        height=576,
        sampler="DPM++ 2M SDE Heun",
        schedule_type="SGM Uniform",
        clip_skip=3,
    )
    back = _round_trip(request, model_name="my,model: v2", model_hash="0123456789", vae_name="vae, fixed.safetensors",
                       vae_hash="9876543210", lora_hashes={"my_style": "abcdefabcdef"})
    assert _fields(back) == _fields(request)


def test_round_trip_img2img_with_empty_negative() -> None:
    request = Img2ImgRequest(
        prompt="über-cute fox: 狐, \"smiling\"\nsecond: line",
        negative_prompt="",
        model="sd15",
        steps=25,
        cfg_scale=7.0,
        seed=0,
        width=512,
        height=768,
        sampler="DPM2 a",
        schedule_type="Exponential",
        denoising_strength=0.35,
        init_image=Image.new("RGB", (512, 768)),
    )
    text = format_infotext(request, seed=0, model_name="sd15", model_hash=None)
    assert "Negative prompt:" not in text
    back = _round_trip(request, model_name="sd15", model_hash=None)
    assert isinstance(back, Img2ImgRequest) and back.init_image is None
    assert _fields(back) == _fields(request)


@pytest.mark.parametrize(
    "changes",
    [
        dict(inpaint_area="Only masked", masked_padding=64, masked_content="fill", invert_mask=True, mask_blur=0),
        dict(inpaint_area="Whole picture", masked_padding=32, masked_content="original", invert_mask=False, mask_blur=12),
    ],
)
def test_round_trip_inpaint(changes: dict) -> None:
    request = InpaintRequest(
        prompt="a red hat, (felt:1.1)\nno: \"quotes\" problem, ✓",
        negative_prompt="Negative-ish: text, (bad:2)",
        model="inpaint-model",
        steps=18,
        cfg_scale=8.5,
        seed=77,
        sampler="DPM++ 2M",
        schedule_type="Karras",
        denoising_strength=1.0,
        **changes,
    )
    back = _round_trip(request, model_name="inpaint-model", model_hash="feedfacecafe"[:10])
    assert isinstance(back, InpaintRequest)
    assert _fields(back) == _fields(request)


def test_automatic_schedule_reads_back_as_what_ran() -> None:
    """A1111 writes the resolved schedule, so an Automatic DPM++ 2M comes back as Karras: same run."""
    request = Txt2ImgRequest(prompt="p", sampler="DPM++ 2M", schedule_type="Automatic")
    back = request_from_infotext(format_infotext(request, seed=1, model_name="m", model_hash=None))
    assert (back.sampler, back.schedule_type) == ("DPM++ 2M", "Karras")
    euler = Txt2ImgRequest(prompt="p", sampler="Euler a")
    back = request_from_infotext(format_infotext(euler, seed=1, model_name="m", model_hash=None))
    assert (back.sampler, back.schedule_type) == ("Euler a", "Automatic")


def test_empty_prompts() -> None:
    request = Txt2ImgRequest(prompt="", negative_prompt="only negative")
    text = format_infotext(request, seed=2, model_name="m", model_hash=None)
    assert text.startswith("Negative prompt: only negative\nSteps: 20,")
    back = request_from_infotext(text)
    assert (back.prompt, back.negative_prompt) == ("", "only negative")
    bare = format_infotext(Txt2ImgRequest(), seed=2, model_name="m", model_hash=None)
    assert bare.startswith("Steps: 20,")
    assert request_from_infotext(bare).prompt == ""
