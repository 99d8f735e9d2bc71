"""Rebuild CLIP's BPE vocabulary (the one every Stable Diffusion text encoder uses) from OpenAI's
merge list, so the app can tokenize offline.

Input: ``bpe_simple_vocab_16e6.txt.gz`` (inside the ``open_clip_torch`` wheel:
``pip download --no-deps open_clip_torch``). Output: ``vocab.json`` and ``merges.txt`` in the
Hugging Face CLIP format. Run once, from the project root (``.venv/bin/python -m scripts.derive_clip_vocab``);
the outputs are committed under app/engine/configs/clip_tokenizer.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

from app.engine.tokenizers import byte_alphabet

MERGE_LINES = 48894  # CLIP uses merge lines 1..48894 of the file (line 0 is a version header)


def derive(bpe_gz: Path, out_dir: Path) -> int:
    lines = gzip.open(bpe_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_LINES + 1]]
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_text = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    (out_dir / "merges.txt").write_text(merge_text, encoding="utf-8")
    return len(vocab)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bpe_gz", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    print(derive(args.bpe_gz, args.out_dir), "tokens written to", args.out_dir)


if __name__ == "__main__":
    main()
