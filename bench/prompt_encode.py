"""Prompt encoding: an A1111 prompt of about 300 tokens with emphasis and two edits, encoded by the
engine's PromptEncoder cold and from its cache, against diffusers' own ``encode_prompt`` of a
75-token prompt, on SD 1.5's text encoder (CLIP ViT-L/14 with random weights: speed depends on the
architecture, not the weights) and SD's real tokenizer.

    .venv/bin/python bench/prompt_encode.py [--runs 7] [--steps 20] [--device cpu]

Prints its figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import app  # noqa: F401  (first: it makes torchvision importable before diffusers imports it)
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from app.engine.checkpoints import CONFIGS_DIR
from app.engine.conditioning import PromptEncoder, prompt_token_count
from app.engine.tiny import build_tiny_pipeline
from app.engine.tokenizers import clip_tokenizer

PHRASES = ("masterpiece, best quality, (detailed fur:1.2), a [red:blue:0.5] fox in a snowy forest, "
           "[sunlit::8] pine trees, soft light, ((sharp focus)), [film grain], bokeh, ")
NEGATIVE = "lowres, blurry, (worst quality:1.4), bad anatomy"
PLAIN_WORDS = "a red fox in a snowy forest, pine trees, soft light, sharp focus, film grain, bokeh, masterpiece, "


def sd15_text_pipeline(device: str):
    """A diffusers SD pipeline whose text encoder and tokenizer are SD 1.5's (the UNet and VAE,
    which encoding never touches, are tiny)."""
    pipe = build_tiny_pipeline("sd1")
    torch.manual_seed(0)
    pipe.text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(CONFIGS_DIR / "sd1" / "text_encoder"))
    pipe.tokenizer = clip_tokenizer()
    return pipe.to(device)


def long_prompt(tokenizer, target: int = 300) -> str:
    """PHRASES repeated with numbered subjects until the prompt has about ``target`` tokens (the
    edits are the first repeat's: two distinct switch steps)."""
    prompt, index = PHRASES, 0
    while prompt_token_count(tokenizer, prompt, 20)[0] < target:
        index += 1
        prompt += f"subject {index}, detailed background, (cinematic:1.1), "
    return prompt


def plain_prompt(tokenizer) -> str:
    """About 75 tokens of plain text (one full chunk, what diffusers encodes at most)."""
    words = (PLAIN_WORDS * 4).split(" ")
    while prompt_token_count(tokenizer, " ".join(words), 20)[0] > 75:
        words.pop()
    return " ".join(words)


def interleaved(runs: int, **work) -> dict[str, float]:
    """Median seconds of each piece of ``work``, run in turn ``runs`` times (so that the machine's
    noise falls on all of them alike)."""
    seconds: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(runs):
        for name, run in work.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    pipe = sd15_text_pipeline(args.device)
    encoder = PromptEncoder(pipe, "sd1")
    prompt = long_prompt(pipe.tokenizer)
    plain = plain_prompt(pipe.tokenizer)
    tokens, target = prompt_token_count(pipe.tokenizer, prompt, args.steps)
    plain_tokens = prompt_token_count(pipe.tokenizer, plain, args.steps)[0]

    def cold() -> None:
        encoder._cache.clear()
        encoder.encode(prompt, NEGATIVE, args.steps)

    def cached() -> None:
        encoder.encode(prompt, NEGATIVE, args.steps)

    def diffusers_plain() -> None:
        pipe.encode_prompt(plain, args.device, 1, True, NEGATIVE)

    interleaved(1, cold=cold, diffusers=diffusers_plain)  # warm-up: first calls allocate
    medians = interleaved(args.runs, cold=cold, cached=cached, diffusers=diffusers_plain)
    cold_s, cached_s, plain_s = medians["cold"], medians["cached"], medians["diffusers"]
    conditioning = encoder.encode(prompt, NEGATIVE, args.steps)
    print(f"prompt: {tokens}/{target} tokens, {len(conditioning.positive)} schedule entries, "
          f"conditioning {tuple(conditioning.at(1)[0].embeds.shape)}")
    print(f"engine cold {cold_s * 1000:.1f} ms, cached {cached_s * 1000:.3f} ms; "
          f"diffusers encode_prompt of {plain_tokens} tokens {plain_s * 1000:.1f} ms")
    print(json.dumps({
        "device": args.device, "torch": torch.__version__, "tokens": tokens, "chunks": target // 75,
        "schedule_entries": len(conditioning.positive), "runs": args.runs,
        "cold_ms": round(cold_s * 1000, 2), "cached_ms": round(cached_s * 1000, 4),
        "diffusers_75_token_ms": round(plain_s * 1000, 2), "cold_over_diffusers": round(cold_s / plain_s, 3),
        "cached_over_diffusers": round(cached_s / plain_s, 5),
    }))


if __name__ == "__main__":
    main()
