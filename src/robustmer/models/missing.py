"""How a model receives an utterance with missing modalities.

Conditions only record which modalities are present; what a model does about the rest is its
own business. A model that handles missing inputs itself (NMER's noise, IMDer's recovery, a
learned token) sets `handles_missing = True` and gets `present=` in `forward`. Every other model
gets the missing modality as zeros in its normalised input space, which is the training mean of
that feature (mean imputation), with sequence lengths left as they were.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

Present = Mapping[str, torch.Tensor]


def zero_missing(inputs: Mapping[str, torch.Tensor], present: Present) -> dict[str, torch.Tensor]:
    """Inputs with the rows of each missing modality set to zero (present: bool `[B]`)."""
    out = {}
    for m, x in inputs.items():
        if m not in present:
            out[m] = x
            continue
        keep = present[m].to(device=x.device, dtype=x.dtype)
        out[m] = x * keep.view(-1, *([1] * (x.dim() - 1)))
    return out


def forward(
    model: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    lengths: Mapping[str, torch.Tensor] | None,
    present: Present | None = None,
) -> torch.Tensor:
    """`model(inputs, lengths)` with missing modalities handled as described above."""
    if present is None:
        return model(inputs, lengths)
    if getattr(model, "handles_missing", False):
        return model(inputs, lengths, present=present)
    return model(zero_missing(inputs, present), lengths)
