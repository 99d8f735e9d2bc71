"""Caption -> text-encoder conditioning, as diffusers' SD / SDXL pipelines compute it at inference."""

from __future__ import annotations

import torch


def encode_captions(tokenizers: list, text_encoders: list[torch.nn.Module], family: str, captions: list[str],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prompt embeddings, pooled embeddings or None). SD 1.x/2.x: the last hidden state of the one
    encoder. SDXL: the penultimate hidden states of both encoders side by side, and the second
    encoder's projected pooled output."""
    if family != "sdxl":
        ids = _token_ids(tokenizers[0], captions, device)
        return text_encoders[0](ids)[0], None
    hidden, pooled = [], None
    for tokenizer, encoder in zip(tokenizers, text_encoders):
        output = encoder(_token_ids(tokenizer, captions, device), output_hidden_states=True)
        if output[0].ndim == 2:
            pooled = output[0]
        hidden.append(output.hidden_states[-2])
    return torch.cat(hidden, dim=-1), pooled


def _token_ids(tokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)


def sdxl_time_ids(width: int, height: int, batch: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """SDXL's size conditioning for a bucket: original size, crop (0, 0), target size."""
    return torch.tensor([[height, width, 0, 0, height, width]] * batch, device=device, dtype=dtype)
