"""VAT's networks: frame transformers with [CLS], the audio-over-video fusion encoder, and heads.

`VAT` is what a checkpoint holds and `evaluate` loads: a video transformer and an audio
transformer (each a [CLS] token + frame tokens), an optional text stream (our extension), a
multimodal encoder whose layers run self-attention over the audio tokens, cross-attention to the
video (+ text) tokens and an FFN (ALBEF's BERT fusion layers with text replaced by audio), and
three heads: the fused [CLS] (the prediction) and one per unimodal [CLS] (the challenge paper's
unimodal branches, trained jointly with weights from the options).

Fine-tuning with momentum distillation attaches a `Momentum` copy (`attach_momentum`); it is
trained by the EMA rule, never by gradients, and is not part of the fold's checkpoint.
The pretraining network (`pretrain.py`) wraps a `VAT` and adds projections, the queue and the
matching head.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from robustmer.models.missing import zero_missing
from robustmer.models.sequence import pool_frames

STREAMS = ("audio", "video", "text")
Branches = dict[str, torch.Tensor]


class FrameTransformer(nn.Module):
    """Frames `[B, T, D]` -> tokens `[B, 1 + T', W]` ([CLS] first) and a key-padding mask.

    Linear embedding of each frame, a learned [CLS] token and learned positions (ViT/AST),
    pre-norm Transformer layers (ViT's layout) and a final LayerNorm. Padding frames are masked
    out of attention; [CLS] is never masked, so a sequence with no frame (no face found) still
    has one valid token.
    """

    def __init__(
        self,
        in_dim: int,
        width: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        max_frames: int,
    ):
        super().__init__()
        self.max_frames = max_frames
        self.embed = nn.Linear(in_dim, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, max_frames + 1, width))
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, heads, ff_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        frames, lens = pool_frames(x, lengths, self.max_frames)
        batch, steps, _ = frames.shape
        tokens = torch.cat([self.cls.expand(batch, -1, -1), self.embed(frames)], dim=1)
        tokens = self.drop(tokens + self.pos[:, : steps + 1])
        pad = torch.arange(steps + 1, device=x.device).unsqueeze(0) > lens.unsqueeze(1)
        return self.norm(self.layers(tokens, src_key_padding_mask=pad)), pad


class FusionLayer(nn.Module):
    """One multimodal layer (ALBEF's BERT fusion layer, post-norm): self-attention over the audio
    tokens -> cross-attention to the other stream's tokens -> FFN, each with residual + LayerNorm.
    """

    def __init__(self, width: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(
            nn.Linear(width, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, width)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        audio: torch.Tensor,
        audio_pad: torch.Tensor,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
    ) -> torch.Tensor:
        h = self.self_attn(audio, audio, audio, key_padding_mask=audio_pad, need_weights=False)[0]
        x = self.norms[0](audio + self.drop(h))
        h = self.cross_attn(x, memory, memory, key_padding_mask=memory_pad, need_weights=False)[0]
        x = self.norms[1](x + self.drop(h))
        return self.norms[2](x + self.drop(self.ff(x)))


class Fusion(nn.Module):
    """The multimodal encoder: `FusionLayer`s over the audio tokens; returns the fused [CLS]."""

    def __init__(self, width: int, layers: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            FusionLayer(width, heads, ff_dim, dropout) for _ in range(layers)
        )

    def forward(
        self,
        audio: torch.Tensor,
        audio_pad: torch.Tensor,
        memory: torch.Tensor,
        memory_pad: torch.Tensor,
    ) -> torch.Tensor:
        x = audio
        for layer in self.layers:
            x = layer(x, audio_pad, memory, memory_pad)
        return x[:, 0]


class Momentum(nn.Module):
    """An EMA copy of some modules: `theta_m <- m * theta_m + (1 - m) * theta`, no gradients.

    `step` counts training steps (the alpha ramp over the first epoch reads it); it lives here so
    an interrupted fit resumes with it (it is in the training state, not in the checkpoint).
    """

    def __init__(self, modules: dict[str, nn.Module], momentum: float):
        super().__init__()
        self.momentum = float(momentum)
        self.copies = nn.ModuleDict({k: copy.deepcopy(m) for k, m in modules.items()})
        for p in self.copies.parameters():
            p.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        """One EMA step towards `modules` (called before the momentum forward pass)."""
        for name, source in modules.items():
            for p_m, p in zip(self.copies[name].parameters(), source.parameters(), strict=True):
                p_m.mul_(self.momentum).add_(p.detach(), alpha=1.0 - self.momentum)

    def ramp(self, alpha: float, steps_per_epoch: int) -> float:
        """ALBEF's alpha: linear from 0 over the first epoch's steps, then constant."""
        return float(alpha) * min(1.0, float(self.step) / max(int(steps_per_epoch), 1))

    def advance(self, alpha: float, steps_per_epoch: int, training: bool) -> float:
        """This step's alpha (the ramp at the steps taken so far); a training step counts."""
        value = self.ramp(alpha, steps_per_epoch)
        if training:
            self.step += 1
        return value


class VAT(nn.Module):
    """Video + audio (+ text) -> class logits from the fused [CLS] (see the module docstring).

    Missing modalities: no recovery; a missing stream arrives as zero frames in the normalised
    input space (the shared contract of models/missing.py), its lengths unchanged.
    """

    handles_missing = False

    def __init__(
        self,
        input_dims: dict[str, int],
        n_classes: int,
        width: int = 64,
        heads: int = 4,
        video_layers: int = 2,
        audio_layers: int = 2,
        fusion_layers: int = 1,
        ff_mult: int = 4,
        dropout: float = 0.1,
        max_frames: int = 32,
    ):
        super().__init__()
        if not {"audio", "video"} <= set(input_dims) <= set(STREAMS):
            raise ValueError(f"VAT reads audio and video (+ text), got {sorted(input_dims)}")
        ff_dim = ff_mult * width
        self.modalities = [m for m in STREAMS if m in input_dims]
        depth = {"audio": audio_layers, "video": video_layers, "text": 1}
        self.encoders = nn.ModuleDict(
            {
                m: FrameTransformer(
                    input_dims[m], width, depth[m], heads, ff_dim, dropout, max_frames
                )
                for m in self.modalities
            }
        )
        # Text (our extension) joins the video tokens in the cross-attention memory, told apart
        # by a learned type embedding.
        self.text_type = nn.Parameter(torch.zeros(1, 1, width)) if "text" in input_dims else None
        self.fusion = Fusion(width, fusion_layers, heads, ff_dim, dropout)
        self.heads = nn.ModuleDict(
            {b: nn.Linear(width, n_classes) for b in ("fused", "audio", "video")}
        )
        self.momentum: Momentum | None = None

    # --- encoders and fusion -------------------------------------------------------------
    def encode(
        self,
        inputs: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor] | None,
        encoders: nn.ModuleDict | None = None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each stream's tokens and padding mask (with `encoders`: the momentum copies)."""
        enc = self.encoders if encoders is None else encoders
        lengths = lengths or {}
        return {m: enc[m](inputs[m], lengths.get(m)) for m in self.modalities}

    def fuse(
        self,
        tokens: dict[str, tuple[torch.Tensor, torch.Tensor]],
        fusion: nn.Module | None = None,
    ) -> torch.Tensor:
        """The fused [CLS] `[B, W]`: audio tokens attending to video (+ text) tokens."""
        memory, memory_pad = tokens["video"]
        if "text" in tokens:
            text, text_pad = tokens["text"]
            memory = torch.cat([memory, text + self.text_type], dim=1)
            memory_pad = torch.cat([memory_pad, text_pad], dim=1)
        audio, audio_pad = tokens["audio"]
        return (self.fusion if fusion is None else fusion)(audio, audio_pad, memory, memory_pad)

    def branches(
        self,
        inputs: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor] | None,
        modules: nn.ModuleDict | None = None,
    ) -> Branches:
        """Logits of the fused, audio and video heads (`modules`: the momentum copies)."""
        if modules is None:
            enc, fusion, heads = self.encoders, self.fusion, self.heads
        else:
            enc, fusion, heads = modules["encoders"], modules["fusion"], modules["heads"]
        tokens = self.encode(inputs, lengths, enc)
        return {
            "fused": heads["fused"](self.fuse(tokens, fusion)),
            "audio": heads["audio"](tokens["audio"][0][:, 0]),
            "video": heads["video"](tokens["video"][0][:, 0]),
        }

    def forward(
        self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.branches(inputs, lengths)["fused"]

    # --- fine-tuning with momentum distillation -------------------------------------------
    def trained_modules(self) -> dict[str, nn.Module]:
        return {"encoders": self.encoders, "fusion": self.fusion, "heads": self.heads}

    def attach_momentum(self, momentum: float) -> None:
        """Start distillation: the momentum model is a copy of the current weights (ALBEF)."""
        self.momentum = Momentum(self.trained_modules(), momentum)

    def detach_momentum(self) -> None:
        self.momentum = None

    def finetune_loss(
        self,
        inputs: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor] | None,
        y: torch.Tensor,
        *,
        alpha: float,
        steps_per_epoch: int,
        weights: dict[str, float],
        present: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """sum_b w_b * [(1 - a) CE(p_b, y) - a * mean(sum(softmax(p_b^m) * log_softmax(p_b)))].

        `a` is `alpha` ramped over the first epoch; p^m are the momentum model's logits on the
        same view, computed after its EMA step. Without a momentum model (distillation off), or
        at alpha 0, this is the weighted cross-entropy.
        """
        if present is not None:
            inputs = zero_missing(inputs, present)
        a = 0.0
        targets: Branches = {}
        if self.momentum is not None:
            a = self.momentum.advance(alpha, steps_per_epoch, self.training)
            self.momentum.update(self.trained_modules())
            with torch.no_grad():
                targets = self.branches(inputs, lengths, self.momentum.copies)
        logits = self.branches(inputs, lengths)
        total = logits["fused"].new_zeros(())
        parts: dict[str, float] = {}
        for b, w in weights.items():
            if not w:
                continue
            loss = distillation_loss(logits[b], y, targets.get(b), a)
            total = total + float(w) * loss
            parts[b] = float(loss.detach())
        return total, parts


def distillation_loss(
    logits: torch.Tensor, y: torch.Tensor, teacher: torch.Tensor | None, alpha: float
) -> torch.Tensor:
    """`(1 - alpha) CE(logits, y) - alpha * mean(sum(softmax(teacher) * log_softmax(logits)))`;
    the cross-entropy alone when there is no teacher or alpha is 0."""
    ce = F.cross_entropy(logits, y)
    if teacher is None or alpha == 0:
        return ce
    soft = -(F.softmax(teacher, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    return (1.0 - alpha) * ce + alpha * soft
