"""Fixed-length frame sequences for models that need one length per modality (MulT, IMDer).

Those models are defined on aligned sequences of one length (MMSA's `aligned_50` data: 50 steps
for every modality), while stores hold ragged sequences at each feature's own rate, or one vector
per utterance. The MER2024 recipe maps any sequence to a fixed length: a shorter one is
zero-padded at the FRONT (so the last step, which MulT reads, is a real frame); a longer one is
padded to a multiple of the length and mean-pooled in groups. Here the pooling padding repeats
the last real frame rather than adding zeros, so the last group's mean is not pulled towards zero.
An utterance vector is repeated along time.
"""

from __future__ import annotations

import torch


def to_fixed_length(x: torch.Tensor, lengths: torch.Tensor | None, length: int) -> torch.Tensor:
    """`[B, T, D]` padded sequences (or `[B, D]` vectors) -> `[B, length, D]`.

    `lengths` gives each sequence's real frames (None: all T are real). A sequence with no frame
    (e.g. no face found) becomes all zeros, which is the training mean after normalisation.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if x.dim() == 2:
        return x.unsqueeze(1).expand(-1, length, -1).contiguous()
    if x.dim() != 3:
        raise ValueError(f"expected [B, T, D] or [B, D], got {tuple(x.shape)}")
    batch, steps, dim = x.shape
    if lengths is None:
        if steps == length:
            return x
        lengths = torch.full((batch,), steps, dtype=torch.long)
    lens = lengths.detach().to("cpu", torch.long).clamp(min=0, max=steps).tolist()
    if all(n == length for n in lens) and steps == length:
        return x
    out = x.new_zeros(batch, length, dim)
    for i, n in enumerate(lens):
        if n == 0:
            continue
        seq = x[i, :n]
        if n <= length:
            out[i, length - n :] = seq
            continue
        group = -(-n // length)
        pad = group * length - n
        if pad:
            seq = torch.cat([seq, seq[-1:].expand(pad, dim)])
        out[i] = seq.view(length, group, dim).mean(dim=1)
    return out


def fixed_length_inputs(
    inputs: dict[str, torch.Tensor],
    lengths: dict[str, torch.Tensor] | None,
    length: int,
) -> dict[str, torch.Tensor]:
    """Every modality of a batch at `length` steps (see `to_fixed_length`)."""
    return {
        m: to_fixed_length(x, None if lengths is None else lengths.get(m), length)
        for m, x in inputs.items()
    }
