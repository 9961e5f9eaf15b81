"""Training-time masking of frame features (the challenge paper's spectrogram-level augmentation,
SpecAugment-style, applied to any frame feature): per utterance, one span of consecutive real
frames and one band of feature dims are set to zero (the training mean after normalisation).

ALBEF feeds the momentum model the same augmented view as the model, so the mask is drawn once
per batch and both see it. Utterance vectors (`[B, D]`) are left alone.
"""

from __future__ import annotations

import torch


def mask_frames(
    inputs: dict[str, torch.Tensor],
    lengths: dict[str, torch.Tensor] | None,
    time_mask: float,
    feature_mask: float,
    generator: torch.Generator,
    modalities: tuple[str, ...] = ("audio", "video"),
) -> dict[str, torch.Tensor]:
    """Inputs with, per frame sequence, a span of up to `time_mask` of its real frames and a band
    of up to `feature_mask` of its dims zeroed; widths and starts drawn from `generator`."""
    if not time_mask and not feature_mask:
        return inputs
    out = dict(inputs)
    for m in modalities:
        x = inputs.get(m)
        if x is None or x.dim() != 3:
            continue
        batch, steps, dim = x.shape
        lens = torch.full((batch,), steps) if not lengths or m not in lengths else lengths[m]
        lens = lens.to("cpu", torch.long).clamp(0, steps)
        keep = torch.ones(batch, steps, dim)
        if time_mask:
            width = (torch.rand(batch, generator=generator) * time_mask * lens).long()
            start = (torch.rand(batch, generator=generator) * (lens - width + 1)).long()
            t = torch.arange(steps).unsqueeze(0)
            span = (t >= start.unsqueeze(1)) & (t < (start + width).unsqueeze(1))
            keep = keep * (~span).unsqueeze(-1)
        if feature_mask:
            width = (torch.rand(batch, generator=generator) * feature_mask * dim).long()
            start = (torch.rand(batch, generator=generator) * (dim - width + 1)).long()
            f = torch.arange(dim).unsqueeze(0)
            band = (f >= start.unsqueeze(1)) & (f < (start + width).unsqueeze(1))
            keep = keep * (~band).unsqueeze(1)
        out[m] = x * keep.to(device=x.device, dtype=x.dtype)
    return out
