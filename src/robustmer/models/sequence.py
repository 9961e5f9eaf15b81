"""Fixed-length frame sequences for models that need one length per modality (MulT, IMDer).

Those models are defined on aligned sequences of one length (MMSA's `aligned_50` data: 50 steps
for every modality), while stores hold ragged sequences at each feature's own rate, or one vector
per utterance. The MER2024 recipe maps any sequence to a fixed length: a shorter one is
zero-padded at the FRONT (so the last step, which MulT reads, is a real frame); a longer one is
padded to a multiple of the length and mean-pooled in groups. Here the pooling padding repeats
the last real frame rather than adding zeros, so the last group's mean is not pulled towards zero.
An utterance vector is repeated along time.

`pool_frames` is the same pooling as a cap rather than a fixed length (VAT's encoders, the
`max_frames` option of `mer2024_attention`): long sequences shrink to at most N frames, short
ones stay as they are, and each sequence keeps its own length.
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


def pool_frames(
    x: torch.Tensor, lengths: torch.Tensor | None, max_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, T, D]` zero-padded frames (or a `[B, D]` vector) -> at most `max_frames` frames.

    A sequence longer than `max_frames` is mean-pooled in groups of ceil(n / max_frames)
    consecutive real frames (the MER2024 recipe's pooling, without padding frames in a group);
    shorter ones are kept as they are. Output frames are padded at the end and the new lengths
    returned; a vector is one frame.
    """
    if x.dim() == 2:
        return x.unsqueeze(1), torch.ones(x.shape[0], dtype=torch.long, device=x.device)
    batch, steps, dim = x.shape
    if lengths is None:
        lengths = torch.full((batch,), steps, dtype=torch.long)
    lens = lengths.to(device=x.device, dtype=torch.long).clamp(0, steps)
    if steps <= max_frames:
        return x, lens
    group = torch.clamp((lens + max_frames - 1) // max_frames, min=1)  # [B]
    t = torch.arange(steps, device=x.device)
    slot = t.unsqueeze(0) // group.unsqueeze(1)  # [B, T]: the output frame of each input frame
    real = t.unsqueeze(0) < lens.unsqueeze(1)
    slot = torch.where(real, slot, torch.full_like(slot, max_frames))  # padding: a dropped slot
    sums = x.new_zeros(batch, max_frames + 1, dim).scatter_add_(
        1, slot.unsqueeze(-1).expand(-1, -1, dim), x
    )
    counts = x.new_zeros(batch, max_frames + 1).scatter_add_(1, slot, real.to(x.dtype))
    pooled = sums[:, :max_frames] / counts[:, :max_frames].clamp(min=1).unsqueeze(-1)
    new_lens = (counts[:, :max_frames] > 0).sum(dim=1)
    return pooled, new_lens
