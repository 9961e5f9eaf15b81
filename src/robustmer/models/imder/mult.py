"""MulT (Tsai et al. 2019) as used by MMSA / IMDer: the fusion backbone of `IMDer`.

Re-implemented from the facts in the IMDer reference notes (no code copied). Per modality a
frozen-able temporal projection `Conv1d(d_m -> proj_dim, k=3, padding=0, bias=False)` maps
`[B, L, d_m]` to `[B, proj_dim, L-2]`; six cross-modal transformers (target attends to source),
pairwise concatenation to `2*proj_dim`, three memory (self-attention) transformers, the LAST time
step of each, and a residual MLP head on the `6*proj_dim` concat.

Transformer internals follow MulT: inputs scaled by sqrt(d) plus sinusoidal positions counted
from 1, pre-LayerNorm (one LayerNorm shared by query, key and value), ReLU FFN of width 4d, a
final LayerNorm, and causal masks `triu(-inf, 1 + |Lk - Lq|)` in every attention, so the last
time step is the only one that sees the whole sequence (which is why the head reads it).

Text is a pre-extracted feature sequence here (no BERT inside the model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from robustmer import MODALITIES
from robustmer.models.sequence import fixed_length_inputs

Inputs = Mapping[str, torch.Tensor]
Present = Mapping[str, torch.Tensor]

# Fusion order of the last-step features (MulT's l, a, v); any fixed order is equivalent.
FUSION_ORDER = ("text", "audio", "video")


def sinusoidal_positions(length: int, dim: int, device: torch.device, dtype: torch.dtype):
    """Fairseq-style sinusoidal table `[length, dim]` for positions 1..length (sin | cos halves)."""
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)
    pos = torch.arange(1, length + 1, device=device, dtype=torch.float32)
    ang = pos[:, None] * freq[None, :]
    table = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table.to(dtype)


def causal_mask(lq: int, lk: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Float mask `[lq, lk]`: -inf strictly above the diagonal offset `1 + |lk - lq|`, else 0."""
    full = torch.full((lq, lk), float("-inf"), device=device, dtype=dtype)
    return torch.triu(full, diagonal=1 + abs(lk - lq))


class TransformerLayer(nn.Module):
    """Pre-LN MulT layer: attention (query x, key/value x_kv or x) + ReLU FFN, both residual."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=attn_dropout)
        self.norm_attn = nn.LayerNorm(embed_dim)  # shared by query, key and value
        self.norm_ffn = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, 4 * embed_dim)
        self.fc2 = nn.Linear(4 * embed_dim, embed_dim)
        self.relu_dropout = relu_dropout
        self.res_dropout = res_dropout

    def forward(
        self, x: torch.Tensor, x_kv: torch.Tensor | None, mask: torch.Tensor | None
    ) -> torch.Tensor:
        residual = x
        x = self.norm_attn(x)
        kv = x if x_kv is None else self.norm_attn(x_kv)
        x = self.attn(x, kv, kv, attn_mask=mask, need_weights=False)[0]
        x = residual + F.dropout(x, self.res_dropout, self.training)
        residual = x
        x = F.relu(self.fc1(self.norm_ffn(x)))
        x = self.fc2(F.dropout(x, self.relu_dropout, self.training))
        return residual + F.dropout(x, self.res_dropout, self.training)


class TransformerEncoder(nn.Module):
    """MulT TransformerEncoder on sequence-first tensors `[L, B, C]`.

    With `x_kv` it is a cross-modal transformer (queries from x, keys/values from x_kv, which is
    embedded once and re-normalised by every layer); without, self-attention.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        layers: int,
        attn_dropout: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        embed_dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.embed_scale = math.sqrt(embed_dim)
        self.embed_dropout = embed_dropout
        self.causal = causal
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, num_heads, attn_dropout, relu_dropout, res_dropout)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(embed_dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        pos = sinusoidal_positions(x.shape[0], self.embed_dim, x.device, x.dtype)
        x = self.embed_scale * x + pos[:, None, :]
        return F.dropout(x, self.embed_dropout, self.training)

    def forward(self, x: torch.Tensor, x_kv: torch.Tensor | None = None) -> torch.Tensor:
        lk = x.shape[0] if x_kv is None else x_kv.shape[0]
        mask = causal_mask(x.shape[0], lk, x.device, x.dtype) if self.causal else None
        x = self._embed(x)
        kv = None if x_kv is None else self._embed(x_kv)
        for layer in self.layers:
            x = layer(x, kv, mask)
        return self.norm(x)


def check_modalities(inputs: Mapping[str, object], what: str = "inputs") -> None:
    """MulT/IMDer need every modality of `MODALITIES`; raise a clear ValueError otherwise."""
    missing = [m for m in MODALITIES if m not in inputs]
    extra = sorted(set(inputs) - set(MODALITIES))
    if missing or extra:
        raise ValueError(
            f"MulT/IMDer {what} need exactly the modalities {MODALITIES}; "
            f"missing {missing}, unexpected {extra}"
        )


def check_seq_len(seq_len: int) -> None:
    """The ScoreNet halves the projected length three times: `seq_len - 2` must divide by 8."""
    if seq_len < 3 or (seq_len - 2) % 8:
        raise ValueError(
            f"seq_len={seq_len}: IMDer needs (seq_len - 2) divisible by 8 and positive, because "
            "the kernel-3 projection drops 2 steps and the score U-Net downsamples 3 times "
            "(e.g. 50 -> 48, 18 -> 16, 10 -> 8); pad or truncate the sequences"
        )


def present_masks(
    present: Present | None, batch: int, device: torch.device
) -> dict[str, torch.Tensor] | None:
    """Per-sample bool masks for every modality, or None when the batch is complete.

    Absent keys count as present. A sample with no modality at all is an error (nothing to
    condition on, nothing to fuse).
    """
    if present is None:
        return None
    extra = sorted(set(present) - set(MODALITIES))
    if extra:
        raise ValueError(f"present has unknown modalities {extra}; expected {MODALITIES}")
    masks = {}
    for m in MODALITIES:
        if m not in present:
            masks[m] = torch.ones(batch, dtype=torch.bool, device=device)
            continue
        mask = torch.as_tensor(present[m], device=device).to(torch.bool).reshape(-1)
        if mask.shape[0] != batch:
            raise ValueError(f"present[{m!r}] has {mask.shape[0]} entries for a batch of {batch}")
        masks[m] = mask
    stacked = torch.stack([masks[m] for m in MODALITIES])
    if not bool(stacked.any(dim=0).all()):
        raise ValueError("every sample needs at least one present modality")
    if bool(stacked.all()):
        return None
    return masks


class MulT(nn.Module):
    """The MulT fusion backbone, pretrained on complete data (MR = 0) as its own stage.

    Like the released model, MulT runs on fixed-length aligned sequences: `project` maps the
    pipeline's ragged sequences (with `lengths`) and utterance vectors to `seq_len` steps. With
    `present`, the projections of missing modalities are zeroed per sample (the zero baseline).
    """

    handles_missing = True

    def __init__(
        self,
        input_dims: Mapping[str, int],
        n_outputs: int,
        *,
        seq_len: int = 50,
        proj_dim: int = 32,
        nlevels: int = 4,
        num_heads: int = 8,
        attn_dropout: float = 0.0,
        attn_dropout_a: float = 0.0,
        attn_dropout_v: float = 0.0,
        relu_dropout: float = 0.0,
        res_dropout: float = 0.0,
        out_dropout: float = 0.0,
        embed_dropout: float = 0.0,
    ):
        super().__init__()
        check_modalities(input_dims, "input_dims")
        check_seq_len(seq_len)
        if n_outputs < 1:
            raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
        self.input_dims = {m: int(input_dims[m]) for m in MODALITIES}
        self.n_outputs = int(n_outputs)
        self.seq_len = int(seq_len)
        self.proj_dim = int(proj_dim)
        self.out_dropout = out_dropout
        self.proj = nn.ModuleDict(
            {
                m: nn.Conv1d(d, proj_dim, 3, padding=0, bias=False)
                for m, d in self.input_dims.items()
            }
        )
        target_dropout = {"text": attn_dropout, "audio": attn_dropout_a, "video": attn_dropout_v}
        common = {"relu_dropout": relu_dropout, "res_dropout": res_dropout,
                  "embed_dropout": embed_dropout}  # fmt: skip
        self.cross = nn.ModuleDict()
        for tgt in FUSION_ORDER:
            for src in FUSION_ORDER:
                if src != tgt:
                    self.cross[f"{tgt}_with_{src}"] = TransformerEncoder(
                        proj_dim, num_heads, nlevels, attn_dropout=target_dropout[tgt], **common
                    )
        self.mem = nn.ModuleDict(
            {
                m: TransformerEncoder(
                    2 * proj_dim, num_heads, nlevels, attn_dropout=attn_dropout, **common
                )
                for m in FUSION_ORDER
            }
        )
        combined = 6 * proj_dim
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_layer = nn.Linear(combined, n_outputs)

    def check_inputs(self, inputs: Inputs) -> int:
        """Validate modalities and shapes; returns the batch size."""
        check_modalities(inputs)
        shapes = {m: tuple(inputs[m].shape) for m in MODALITIES}
        for m, shape in shapes.items():
            if len(shape) != 3 or shape[1] != self.seq_len or shape[2] != self.input_dims[m]:
                raise ValueError(
                    f"{m}: expected [B, {self.seq_len}, {self.input_dims[m]}], got {shape} "
                    f"(all modalities must share seq_len={self.seq_len}); {shapes}"
                )
        batches = {s[0] for s in shapes.values()}
        if len(batches) != 1:
            raise ValueError(f"modalities disagree on the batch size: {shapes}")
        return batches.pop()

    def project(
        self, inputs: Inputs, lengths: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """modality -> `[B, proj_dim, L-2]`: the temporal projections (diffusion space).

        Ragged padded sequences (with `lengths`) and utterance vectors `[B, D]` are first
        brought to `seq_len` steps (`robustmer.models.sequence`); aligned inputs pass unchanged.
        """
        inputs = fixed_length_inputs(dict(inputs), dict(lengths) if lengths else None,
                                     self.seq_len)  # fmt: skip
        self.check_inputs(inputs)
        return {m: self.proj[m](inputs[m].transpose(1, 2)) for m in MODALITIES}

    def fuse(self, projected: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Cross-modal + memory transformers on the projections, last step, head: `[B, n_out]`."""
        seq = {m: projected[m].permute(2, 0, 1) for m in FUSION_ORDER}  # [L', B, C]
        last = []
        for tgt in FUSION_ORDER:
            pair = [self.cross[f"{tgt}_with_{src}"](seq[tgt], seq[src])
                    for src in FUSION_ORDER if src != tgt]  # fmt: skip
            last.append(self.mem[tgt](torch.cat(pair, dim=2))[-1])
        h = torch.cat(last, dim=1)
        hidden = F.dropout(F.relu(self.proj1(h)), self.out_dropout, self.training)
        return self.out_layer(self.proj2(hidden) + h)

    def forward(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None = None,
        present: Present | None = None,
    ) -> torch.Tensor:
        projected = self.project(inputs, lengths)
        batch = next(iter(projected.values())).shape[0]
        masks = present_masks(present, batch, projected["audio"].device)
        if masks is not None:
            projected = zero_missing_projections(projected, masks)
        return self.fuse(projected)

    def task_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy for classification (n_outputs > 1), else L1 on the squeezed output."""
        if self.n_outputs > 1:
            return F.cross_entropy(out, y.long())
        return F.l1_loss(out.squeeze(-1), y.to(out.dtype))

    def training_loss(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None,
        y: torch.Tensor,
        present: Present | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = self.task_loss(self(inputs, lengths, present), y)
        return loss, {"task": float(loss.detach())}


def zero_missing_projections(
    projected: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Projections with the rows of missing samples set to zero."""
    return {
        m: x * masks[m].to(x.dtype).view(-1, 1, 1) if m in masks else x
        for m, x in projected.items()
    }
