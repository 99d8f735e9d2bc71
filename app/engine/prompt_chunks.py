"""Weighted prompt pieces -> 75-token chunks, as A1111 cuts a prompt for the CLIP text encoder.

Each piece is tokenized on its own (no start/end tokens). Tokens fill chunks of 75; when a chunk
is full and a comma stands within its last 20 tokens, what follows the comma moves to the next
chunk; ``BREAK`` closes the chunk. A textual-inversion word takes as many slots as its vectors
(placeholder id 0, filled by the encoder) and never straddles two chunks; when the comma backtrack
moves tokens on, an embedding among them moves with them (A1111 leaves its vectors behind, in the
old chunk's padding).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.engine.prompt_parser import BREAK_WEIGHT, BREAK_WORD

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20
EMBEDDING_PLACEHOLDER = 0


@dataclass
class Chunk:
    """Up to 75 token ids (without start/end), a weight per token, and the embedding words in it."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    embeddings: list[tuple[int, str]] = field(default_factory=list)  # (offset of the first slot, name)

    def split_after(self, index: int) -> "Chunk":
        """Cut this chunk after ``index`` tokens and return what followed as a new chunk."""
        moved = Chunk(self.tokens[index:], self.weights[index:],
                      [(offset - index, name) for offset, name in self.embeddings if offset >= index])
        self.tokens, self.weights = self.tokens[:index], self.weights[:index]
        self.embeddings = [(offset, name) for offset, name in self.embeddings if offset < index]
        return moved


@dataclass
class ChunkedPrompt:
    chunks: list[Chunk]
    token_count: int  # as A1111 counts: 75 per closed chunk, then the tokens of the last one

    @property
    def used_embeddings(self) -> list[str]:
        names: list[str] = []
        for chunk in self.chunks:
            names += [name for _, name in chunk.embeddings if name not in names]
        return names


class EmbeddingWords:
    """Finds textual-inversion names in token streams. A name matches where the tokens of the
    name (by the model's tokenizer) stand in a piece; the longest name wins."""

    def __init__(self, name_tokens: Mapping[str, Sequence[int]], vector_counts: Mapping[str, int]) -> None:
        self.vector_counts = dict(vector_counts)
        self._by_first: dict[int, list[tuple[tuple[int, ...], str]]] = {}
        for name, ids in name_tokens.items():
            if ids:
                self._by_first.setdefault(ids[0], []).append((tuple(ids), name))
        for candidates in self._by_first.values():
            candidates.sort(key=lambda item: len(item[0]), reverse=True)

    def match(self, tokens: Sequence[int], position: int) -> tuple[str, int] | None:
        """(name, tokens it spans) of the embedding word starting at ``position``, or None."""
        for ids, name in self._by_first.get(tokens[position], ()):
            if tuple(tokens[position:position + len(ids)]) == ids:
                return name, len(ids)
        return None


NO_WORDS = EmbeddingWords({}, {})


def chunk_prompt(pieces: Sequence[tuple[str, float]], piece_tokens: Sequence[Sequence[int]],
                 comma_id: int | None, words: EmbeddingWords = NO_WORDS) -> ChunkedPrompt:
    """Cut tokenized pieces (``piece_tokens[i]`` are the ids of ``pieces[i]``) into chunks."""
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1
    token_count = 0

    def close(last: bool = False) -> None:
        nonlocal current, last_comma, token_count
        token_count += len(current.tokens) if last else CHUNK_TOKENS
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for (text, weight), tokens in zip(pieces, piece_tokens):
        if weight == BREAK_WEIGHT and text == BREAK_WORD:
            close()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            full = len(current.tokens) == CHUNK_TOKENS
            if token == comma_id:
                last_comma = len(current.tokens)
            elif full and last_comma != -1 and CHUNK_TOKENS - last_comma <= COMMA_BACKTRACK:
                moved = current.split_after(last_comma + 1)
                close()
                current = moved
            if len(current.tokens) == CHUNK_TOKENS:
                close()
            found = words.match(tokens, position)
            if found is None:
                current.tokens.append(token)
                current.weights.append(weight)
                position += 1
                continue
            name, spanned = found
            vectors = words.vector_counts[name]
            if len(current.tokens) + vectors > CHUNK_TOKENS:
                close()
            current.embeddings.append((len(current.tokens), name))
            current.tokens += [EMBEDDING_PLACEHOLDER] * vectors
            current.weights += [weight] * vectors
            position += spanned
    if current.tokens or not chunks:
        close(last=True)
    return ChunkedPrompt(chunks, token_count)


def token_target(token_count: int) -> int:
    """The length A1111 shows after the slash: 75, 150, ... (``80/150``)."""
    return math.ceil(max(token_count, 1) / CHUNK_TOKENS) * CHUNK_TOKENS
