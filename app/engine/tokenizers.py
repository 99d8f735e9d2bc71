"""CLIP tokenizers built offline from the vocabulary shipped in ``configs/clip_tokenizer``.

Every Stable Diffusion family uses OpenAI's CLIP BPE vocabulary; they differ only in the pad
token (SD 1.x and SDXL's first encoder pad with ``<|endoftext|>``, SD 2.x and SDXL's second
with ``!``). transformers 5 ignores ``vocab_file=``, so the tokenizer is built from objects.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

CLIP_VOCAB_DIR = Path(__file__).parent / "configs" / "clip_tokenizer"
PAD_EOS = "<|endoftext|>"
PAD_BANG = "!"


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for raw bytes, in GPT-2/CLIP order: the first entries of every
    CLIP BPE vocabulary (SD's, rebuilt by scripts/derive_clip_vocab.py, and the demo model's)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    vocab = json.loads((CLIP_VOCAB_DIR / "vocab.json").read_text(encoding="utf-8"))
    lines = (CLIP_VOCAB_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = tuple(tuple(line.split()) for line in lines if line and not line.startswith("#version"))
    return vocab, merges  # type: ignore[return-value]


def clip_tokenizer(pad_token: str = PAD_EOS) -> CLIPTokenizer:
    """A fresh CLIP tokenizer with SD's 49,408-token vocabulary and the given pad token."""
    vocab, merges = _vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab), merges=list(merges), model_max_length=77, pad_token=pad_token
    )
