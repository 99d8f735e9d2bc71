"""Loss weighting shared by the LoRA trainer and the demo model's build."""

from __future__ import annotations

import torch


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float,
                    prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023) per sample: min(SNR, gamma) / SNR for epsilon
    prediction, min(SNR, gamma) / (SNR + 1) for v prediction."""
    alphas = alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / (snr + 1 if prediction_type == "v_prediction" else snr)
