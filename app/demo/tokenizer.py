"""A CLIP-format tokenizer (``vocab.json`` + ``merges.txt``) for the shapes captions only.

It is CLIP's byte-level BPE with a vocabulary of the 512 single-character tokens, one merge chain
per caption word, and the start/end tokens: the same format and code path as SD's tokenizer, with
a vocabulary of a few hundred entries instead of 49,408 (a small embedding table). A word outside
the captions still tokenizes, into characters.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from app.demo.shapes import HELD_OUT_SHAPE, PALETTE, SHAPES, TEMPLATES
from app.engine.tokenizers import byte_alphabet

START, END = "<|startoftext|>", "<|endoftext|>"


def caption_words() -> list[str]:
    words = set(PALETTE) | set(SHAPES) | {HELD_OUT_SHAPE}
    for template in TEMPLATES:
        words |= {w.strip(",") for w in template.split() if not w.startswith("{")}
    return sorted(w for w in words if w)


def build_vocab(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
                tokens.append(pair[0] + pair[1])
            parts = [pair[0] + pair[1], *parts[2:]]
    tokens += [START, END]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def shapes_tokenizer() -> CLIPTokenizer:
    vocab, merges = build_vocab(caption_words())
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77, pad_token=END)


def write_vocab_files(folder: Path) -> None:
    """``vocab.json`` and ``merges.txt`` in CLIP's format (transformers 5 saves only ``tokenizer.json``)."""
    vocab, merges = build_vocab(caption_words())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
