"""Prompt -> conditioning tensors per step, as A1111 computes them, for diffusers' SD and SDXL pipelines.

``PromptEncoder`` (one per loaded model) reads a prompt in A1111's language: the schedule of
prompt editing / alternation, emphasis weights, 75-token chunks, textual-inversion words. Each
distinct text of a schedule is encoded once: its chunks, each as start + 75 tokens + end through
the text encoder(s), joined on the token axis. All texts of one prompt are encoded together per
chunk, and the Original emphasis restores the mean over that batch, as A1111 does. Positive and
negative are padded to the same length with the empty prompt's encoding. The result is handed to
the pipeline as ``prompt_embeds`` (and SDXL's pooled embeddings); later entries of the schedule
are swapped in from ``callback_on_step_end`` by ``ConditioningSwitcher``.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from app.engine.prompt_chunks import CHUNK_TOKENS, NO_WORDS, Chunk, ChunkedPrompt, EmbeddingWords, chunk_prompt, token_target
from app.engine.prompt_parser import EMPHASIS_MODES, parse_emphasis, prompt_schedule

DEFAULT_EMPHASIS = EMPHASIS_MODES[0]
CACHE_ENTRIES = 32


@dataclass(frozen=True)
class Conditioning:
    """One text's encoding: (1, tokens, dim) embeddings and, for SDXL, (1, dim) pooled embeddings."""

    embeds: torch.Tensor
    pooled: torch.Tensor | None = None

    def padded_to(self, tokens: int, filler: "Conditioning") -> "Conditioning":
        """This encoding followed by copies of ``filler`` (one 77-token chunk) up to ``tokens``."""
        missing = (tokens - self.embeds.shape[1]) // filler.embeds.shape[1]
        if missing <= 0:
            return self
        return Conditioning(torch.cat([self.embeds, *[filler.embeds] * missing], dim=1), self.pooled)


@dataclass(frozen=True)
class StepConditioning:
    """Positive and negative conditioning per step: lists of (last step it applies to, encoding),
    all of one length; ``embeddings_used``: textual-inversion name -> short hash, in order of use."""

    positive: tuple[tuple[int, Conditioning], ...]
    negative: tuple[tuple[int, Conditioning], ...]
    embeddings_used: Mapping[str, str] = field(default_factory=dict)

    @property
    def changes_during_sampling(self) -> bool:
        return len(self.positive) > 1 or len(self.negative) > 1

    def at(self, step: int) -> tuple[Conditioning, Conditioning]:
        """(positive, negative) of the first entries whose last step is >= ``step`` (the last entries
        past the end)."""
        return _entry_at(self.positive, step), _entry_at(self.negative, step)

    def pipeline_kwargs(self) -> dict[str, torch.Tensor]:
        """The first step's tensors as diffusers' pipeline arguments."""
        positive, negative = self.at(1)
        kwargs = {"prompt_embeds": positive.embeds, "negative_prompt_embeds": negative.embeds}
        if positive.pooled is not None and negative.pooled is not None:
            kwargs |= {"pooled_prompt_embeds": positive.pooled, "negative_pooled_prompt_embeds": negative.pooled}
        return kwargs


def _entry_at(entries: Sequence[tuple[int, Conditioning]], step: int) -> Conditioning:
    for last_step, conditioning in entries:
        if step <= last_step:
            return conditioning
    return entries[-1][1]


class ConditioningSwitcher:
    """``callback_on_step_end`` part that puts the next step's conditioning in place.

    The pipeline's loop holds negative and positive stacked (with CFG), each repeated per image of
    the batch; SDXL's pooled embeddings travel as ``add_text_embeds`` in the same layout.
    """

    def __init__(self, conditioning: StepConditioning, batch_size: int) -> None:
        self.conditioning = conditioning
        self.batch_size = batch_size
        self._current = conditioning.at(1)

    @property
    def tensor_inputs(self) -> list[str]:
        pooled = self._current[0].pooled is not None
        return ["prompt_embeds", "add_text_embeds"] if pooled else ["prompt_embeds"]

    def __call__(self, pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        # A1111 counts model calls from 0 and uses the first entry whose last step is >= that count:
        # the first entry serves calls 0 and 1, so [a:b:3] draws a for four calls. The next call's
        # count is step_index + 1.
        wanted = self.conditioning.at(step_index + 1)
        if wanted[0] is self._current[0] and wanted[1] is self._current[1]:
            return callback_kwargs
        self._current = wanted
        current = callback_kwargs["prompt_embeds"]
        guided = current.shape[0] == 2 * self.batch_size
        callback_kwargs["prompt_embeds"] = self._stack([c.embeds for c in wanted], guided).to(current)
        if "add_text_embeds" in callback_kwargs and wanted[0].pooled is not None:
            pooled = self._stack([c.pooled for c in wanted], guided)
            callback_kwargs["add_text_embeds"] = pooled.to(callback_kwargs["add_text_embeds"])
        return callback_kwargs

    def _stack(self, pair: list, guided: bool) -> torch.Tensor:
        positive, negative = pair
        parts = [negative, positive] if guided else [positive]
        return torch.cat([part.repeat_interleave(self.batch_size, dim=0) for part in parts])


@dataclass(frozen=True)
class EncodeSettings:
    """What besides the text changes the encoding."""

    clip_skip: int = 1  # A1111 numbering: 1 = last layer; SD 1.x only, as in A1111
    emphasis: str = DEFAULT_EMPHASIS
    lora_state: tuple = ()  # the fused LoRAs that touch the text encoder(s)


@dataclass(frozen=True)
class PromptEmbeddings:
    """The textual inversions a model can use: name -> vectors per text encoder, and short hashes."""

    vectors: Mapping[str, tuple[torch.Tensor, ...]] = field(default_factory=dict)
    hashes: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> tuple:
        return tuple(sorted(self.hashes.items()))


NO_EMBEDDINGS = PromptEmbeddings()


class PromptEncoder:
    """Encodes prompts for one pipeline (SD 1.x, SD 2.x or SDXL) and caches the results."""

    def __init__(self, pipe: Any, family: str, cache_entries: int = CACHE_ENTRIES) -> None:
        self.family = family
        self.tokenizer = pipe.tokenizer
        self.encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if family == "sdxl" else [])
        self.pad_ids = [pipe.tokenizer.pad_token_id]
        if family == "sdxl":
            self.pad_ids.append(pipe.tokenizer_2.pad_token_id)
        self.widths = tuple(int(encoder.config.hidden_size) for encoder in self.encoders)
        self.comma_id = self.tokenizer.get_vocab().get(",</w>")
        self._cache: OrderedDict[tuple, StepConditioning] = OrderedDict()
        self._cache_entries = cache_entries
        self._lock = threading.Lock()
        self.encoded_texts = 0  # texts run through the encoders (the cache's misses), for tests and benches

    # ----- public ----------------------------------------------------------------------------
    def encode(self, prompt: str, negative_prompt: str, steps: int, settings: EncodeSettings = EncodeSettings(),
               embeddings: PromptEmbeddings = NO_EMBEDDINGS) -> StepConditioning:
        """The conditioning of ``prompt`` / ``negative_prompt`` over ``steps`` sampling steps."""
        if settings.emphasis not in EMPHASIS_MODES:
            raise ValueError(f"Unknown emphasis mode {settings.emphasis!r}; choose one of {', '.join(EMPHASIS_MODES)}.")
        key = (prompt, negative_prompt, steps, settings, embeddings.fingerprint)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        result = self._encode(prompt, negative_prompt, steps, settings, embeddings)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return result

    def token_count(self, prompt: str, steps: int, emphasis: str = DEFAULT_EMPHASIS,
                    embeddings: PromptEmbeddings = NO_EMBEDDINGS) -> tuple[int, int]:
        """(tokens, target) as A1111's counter shows them, e.g. (80, 150): the longest text of the schedule."""
        return prompt_token_count(self.tokenizer, prompt, steps, emphasis, self._words(embeddings), self.comma_id)

    # ----- encoding --------------------------------------------------------------------------
    def _encode(self, prompt: str, negative_prompt: str, steps: int, settings: EncodeSettings,
                embeddings: PromptEmbeddings) -> StepConditioning:
        words = self._words(embeddings)
        sides, used = [], []
        for text in (prompt, negative_prompt):
            schedule = prompt_schedule(text, steps)
            uses = Counter(entry for _, entry in schedule)  # A1111 encodes every entry: repeats weigh in the mean
            chunked = [self._chunk(entry, settings.emphasis, words) for entry in uses]
            encoded = dict(zip(uses, self._encode_batch(chunked, list(uses.values()), settings, embeddings)))
            sides.append([(step, encoded[entry]) for step, entry in schedule])
            used += [name for prompt_chunks in chunked for name in prompt_chunks.used_embeddings]
        positive, negative = sides
        length = max(c.embeds.shape[1] for _, c in positive + negative)
        if any(c.embeds.shape[1] != length for _, c in positive + negative):
            filler = self._encode_batch([self._chunk("", DEFAULT_EMPHASIS, words)], [1], settings, embeddings)[0]
            positive = [(step, c.padded_to(length, filler)) for step, c in positive]
            negative = [(step, c.padded_to(length, filler)) for step, c in negative]
        if self.family == "sdxl" and negative_prompt == "":  # A1111 and diffusers: zeros for an empty negative on SDXL
            negative = [(step, Conditioning(torch.zeros_like(c.embeds), torch.zeros_like(c.pooled)))
                        for step, c in negative]
        return StepConditioning(tuple(positive), tuple(negative),
                                {name: embeddings.hashes.get(name, "") for name in dict.fromkeys(used)})

    def _words(self, embeddings: PromptEmbeddings) -> EmbeddingWords:
        return self.words_for(self.tokenizer, embeddings)

    @staticmethod
    def words_for(tokenizer: Any, embeddings: PromptEmbeddings) -> EmbeddingWords:
        """The embeddings' names as ``tokenizer`` splits them, with their vector counts."""
        names = list(embeddings.vectors)
        ids = tokenizer(names, add_special_tokens=False)["input_ids"] if names else []
        return EmbeddingWords(dict(zip(names, ids)),
                              {name: int(vectors[0].shape[0]) for name, vectors in embeddings.vectors.items()})

    def _chunk(self, text: str, emphasis: str, words: EmbeddingWords) -> ChunkedPrompt:
        return chunk_text(self.tokenizer, text, emphasis, words, self.comma_id)

    @torch.no_grad()
    def _encode_batch(self, prompts: list[ChunkedPrompt], uses: list[int], settings: EncodeSettings,
                      embeddings: PromptEmbeddings) -> list[Conditioning]:
        """Encode several chunked texts together, chunk by chunk, padding short ones with empty chunks;
        ``uses[i]``: how many steps use text i (its weight in the emphasis mean)."""
        self.encoded_texts += len(prompts)
        chunk_count = max(len(p.chunks) for p in prompts)
        per_chunk, pooled = [], None
        for index in range(chunk_count):
            rows = [p.chunks[index] if index < len(p.chunks) else Chunk() for p in prompts]
            outputs = [self._encode_rows(slot, rows, uses, settings, embeddings) for slot in range(len(self.encoders))]
            per_chunk.append(torch.cat([z for z, _ in outputs], dim=-1))
            if index == 0 and self.family == "sdxl":
                pooled = outputs[-1][1]
        embeds = torch.cat(per_chunk, dim=1)
        return [Conditioning(embeds[i:i + 1], None if pooled is None else pooled[i:i + 1]) for i in range(len(prompts))]

    def _encode_rows(self, slot: int, rows: list[Chunk], uses: list[int], settings: EncodeSettings,
                     embeddings: PromptEmbeddings) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One encoder over one chunk of each row: (z (rows, 77, dim) with emphasis applied, pooled or None)."""
        encoder = self.encoders[slot]
        device = encoder.device
        clip_skip = settings.clip_skip if self.family == "sd1" else 1  # A1111 skips layers on SD 1.x only
        if clip_skip > int(encoder.config.num_hidden_layers):
            raise ValueError(f"Clip skip {clip_skip} is more than this model's text encoder has layers "
                             f"({encoder.config.num_hidden_layers}).")
        ids = torch.tensor([self._chunk_ids(row, self.pad_ids[slot]) for row in rows], device=device)
        fixes = [[(offset + 1, embeddings.vectors[name][slot]) for offset, name in row.embeddings] for row in rows]
        sdxl = self.family == "sdxl"
        with _embedding_vectors(encoder, fixes):
            if not sdxl and clip_skip == 1:  # the call diffusers makes: same tensors bit for bit
                output = encoder(ids)
                z = output[0]
            else:
                output = encoder(ids, output_hidden_states=True)
                if sdxl:  # both encoders: the penultimate layer, without the final norm
                    z = output.hidden_states[-2]
                else:
                    z = _final_layer_norm(encoder)(output.hidden_states[-clip_skip])
        pooled = output.text_embeds if sdxl and slot == 1 else None
        weights = torch.tensor([row.weights + [1.0] * (CHUNK_TOKENS + 1 - len(row.weights)) for row in rows])
        weights = torch.nn.functional.pad(weights, (1, 0), value=1.0)
        return apply_emphasis(z, weights, settings.emphasis, torch.tensor(uses, dtype=torch.float32)), pooled

    def _chunk_ids(self, chunk: Chunk, pad_id: int) -> list[int]:
        """start + tokens + end, then padding: the end token up to 77 where pad is end-of-text (SD 1.x),
        else the pad id after the first end token (SD 2.x, SDXL's second encoder)."""
        start, end = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        return [start, *chunk.tokens, end] + [pad_id] * (CHUNK_TOKENS - len(chunk.tokens))


def chunk_text(tokenizer: Any, text: str, emphasis: str, words: EmbeddingWords, comma_id: int | None) -> ChunkedPrompt:
    """``text`` (one entry of a schedule) as weighted chunks; emphasis "None" reads brackets as text."""
    if emphasis == "None":
        pieces = [(text, 1.0)]
    else:
        pieces = parse_emphasis(text)
        if emphasis == "Ignore":
            pieces = [(piece, weight if weight < 0 else 1.0) for piece, weight in pieces]
    token_ids = tokenizer([piece for piece, _ in pieces], add_special_tokens=False, verbose=False)["input_ids"]
    return chunk_prompt(pieces, token_ids, comma_id, words)


def prompt_token_count(tokenizer: Any, prompt: str, steps: int, emphasis: str = DEFAULT_EMPHASIS,
                       words: EmbeddingWords | None = None, comma_id: int | None = None) -> tuple[int, int]:
    """(tokens, target) of the longest text of ``prompt``'s schedule, as A1111's prompt counter."""
    if comma_id is None:
        comma_id = tokenizer.get_vocab().get(",</w>")
    texts = {text for _, text in prompt_schedule(prompt, max(1, steps))}
    count = max(chunk_text(tokenizer, text, emphasis, words or NO_WORDS, comma_id).token_count
                for text in texts)
    return count, token_target(count)


def apply_emphasis(z: torch.Tensor, weights: torch.Tensor, emphasis: str, uses: torch.Tensor | None = None) -> torch.Tensor:
    """Scale each token's row of ``z`` (rows, tokens, dim) by its weight (rows, tokens). Original then
    restores the mean of the whole batch, each row counted ``uses[row]`` times (default once)."""
    if emphasis in ("Ignore", "None") or bool((weights == 1.0).all()):
        return z
    scaled = z.float() * weights.to(z.device).unsqueeze(-1)
    if emphasis == "Original":
        counts = torch.ones(z.shape[0]) if uses is None else uses.float()
        counts = counts.to(z.device)

        def batch_mean(values: torch.Tensor) -> torch.Tensor:
            return (values.mean(dim=(1, 2)) * counts).sum() / counts.sum()

        scaled = scaled * (batch_mean(z.float()) / batch_mean(scaled))
    return scaled.to(z.dtype)


def _final_layer_norm(encoder: torch.nn.Module) -> torch.nn.Module:
    """CLIP's last norm (transformers 5 dropped the ``text_model`` level; older versions have it)."""
    inner = getattr(encoder, "text_model", encoder)
    return inner.final_layer_norm


@contextlib.contextmanager
def _embedding_vectors(encoder: torch.nn.Module, fixes: list[list[tuple[int, torch.Tensor]]]) -> Iterator[None]:
    """While encoding, put textual-inversion vectors at their positions of the token embeddings
    (a forward hook on the input embedding layer; nothing stays on the model afterwards)."""
    if not any(fixes):
        yield
        return

    def replace_rows(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, row_fixes in enumerate(fixes):
            for position, vectors in row_fixes:
                output[row, position:position + vectors.shape[0]] = vectors.to(output)
        return output

    handle = encoder.get_input_embeddings().register_forward_hook(replace_rows, prepend=True)
    try:
        yield
    finally:
        handle.remove()
