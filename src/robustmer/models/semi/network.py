"""MER2024-SEMI network: per-modality Transformer encoders, four classifiers, soft voting on logits.

Re-implemented from the facts about the paper and its released code (see shared/spec/semi.md).
One network serves both stages: `pretrain_loss` (contrastive pretraining without labels) and
`training_loss` (fine-tuning); `encoder_state` / `load_encoders` carry the pretrained parts from
the first to the second. Inputs are utterance-level vectors `[B, D]` per modality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustmer.corruption.feature_noise import NoiseSchedule, add_noise, schedule
from robustmer.models.semi.losses import (
    MODALITIES,
    Temperature,
    modality_contrastive,
    noise_contrastive,
    nt_xent,
    nt_xent_released,
)

Inputs = Mapping[str, torch.Tensor]
HEADS = (*MODALITIES, "fused")
PRETRAINED = ("encoders", "input_fc", "proj", "temperature")
"""Attribute names (state-dict prefixes) of the parts that pretraining learns."""


def pick_nhead(d_model: int, requested: int) -> int:
    """Largest divisor of `d_model` that is <= `requested` (attention needs nhead | d_model).

    Feature sizes are whatever the extractor gives (e.g. 5120, 1024, 768, or an odd 88), so a
    fixed head count cannot always be used; a prime size falls back to a single head.
    """
    if d_model < 1 or requested < 1:
        raise ValueError(f"need d_model >= 1 and nhead >= 1, got {d_model}, {requested}")
    return max(k for k in range(1, min(requested, d_model) + 1) if d_model % k == 0)


def mlp_classifier(
    in_dim: int, layers: Sequence[int], n_classes: int, dropout: float
) -> nn.Sequential:
    """FcClassifier as released (BN on): Linear -> ReLU -> BatchNorm1d -> Dropout, then Linear."""
    modules: list[nn.Module] = []
    width = in_dim
    for size in layers:
        modules += [nn.Linear(width, size), nn.ReLU(), nn.BatchNorm1d(size), nn.Dropout(dropout)]
        width = size
    modules.append(nn.Linear(width, n_classes))
    return nn.Sequential(*modules)


def _check_modalities(input_dims: Mapping[str, int]) -> None:
    missing = [m for m in MODALITIES if m not in input_dims]
    extra = sorted(set(input_dims) - set(MODALITIES))
    if missing or extra:
        raise ValueError(
            f"SemiNet needs exactly the modalities {MODALITIES}; "
            f"missing {missing}, unexpected {extra}"
        )


class SemiNet(nn.Module):
    """Per-modality Transformer -> Linear(D_m -> hidden); classifiers on A, V, L and cat(A, V, L).

    Each modality's utterance vector goes through an `nn.TransformerEncoder` (d_model = D_m,
    nhead = `pick_nhead(D_m, nhead)`) as a length-1 sequence (batch_first), so a prediction does
    not depend on the rest of the batch. `batch_as_sequence=True` reproduces the released quirk
    (x.unsqueeze(1) into a sequence-first encoder: the batch is one sequence and samples attend
    to each other), which makes predictions batch-dependent; it is off by default.

    The output is weighted soft voting on logits with `vote_weights` for (audio, video, text,
    fused). `released_contrast=True` swaps in the released NT-Xent and nine unclamped
    temperatures; the default is the intended NT-Xent with one bounded temperature.

    `handles_missing` is not set: per models/missing.py a missing modality arrives as zero rows
    (the training mean in normalised feature space) and goes through the network like any input.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        n_classes: int,
        hidden: int = 128,
        nhead: int = 4,
        ff_dim: int = 256,
        layers: int = 1,
        dropout: float = 0.3,
        vote_weights: Sequence[float] = (0.7, 0.4, 0.3, 0.7),
        batch_as_sequence: bool = False,
        released_contrast: bool = False,
        classifier_layers: Sequence[int] = (256, 128),
        noise_steps: int = 100,
    ):
        super().__init__()
        _check_modalities(input_dims)
        if len(vote_weights) != len(HEADS):
            raise ValueError(f"vote_weights needs {len(HEADS)} values {HEADS}, got {vote_weights}")
        self.vote_weights = tuple(float(w) for w in vote_weights)
        self.batch_as_sequence = bool(batch_as_sequence)
        self.nheads = {m: pick_nhead(int(input_dims[m]), nhead) for m in MODALITIES}
        self.encoders = nn.ModuleDict(
            {
                m: self._transformer(int(input_dims[m]), self.nheads[m], ff_dim, layers, dropout)
                for m in MODALITIES
            }
        )
        self.input_fc = nn.ModuleDict({m: nn.Linear(input_dims[m], hidden) for m in MODALITIES})
        self.proj = nn.ModuleDict({m: nn.Linear(hidden, 2 * hidden) for m in MODALITIES})
        self.temperature = Temperature(released=released_contrast)
        self.contrast = nt_xent_released if released_contrast else nt_xent
        cls = {m: mlp_classifier(hidden, classifier_layers, n_classes, dropout) for m in MODALITIES}
        cls["fused"] = mlp_classifier(3 * hidden, classifier_layers, n_classes, dropout)
        self.classifiers = nn.ModuleDict(cls)
        self.noise_schedule: NoiseSchedule = schedule("semi", noise_steps)

    def _transformer(
        self, d_model: int, nhead: int, ff_dim: int, layers: int, dropout: float
    ) -> nn.TransformerEncoder:
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=ff_dim, dropout=dropout,
            batch_first=not self.batch_as_sequence,
        )  # fmt: skip
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def encode(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        """Hidden feature `[B, hidden]` per modality.

        x.unsqueeze(1) is `[B, 1, D]`: B sequences of length 1 (batch_first), or with
        `batch_as_sequence` one sequence of length B (sequence-first), as released.
        """
        out = {}
        for m in MODALITIES:
            x = inputs[m]
            if x.dim() != 2:
                raise ValueError(f"SemiNet takes utterance vectors [B, D]; {m} is {tuple(x.shape)}")
            out[m] = self.input_fc[m](self.encoders[m](x.unsqueeze(1)).squeeze(1))
        return out

    def heads(self, h: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Logits of the audio, video, text classifiers and of the fused one on cat(A, V, L)."""
        logits = {m: self.classifiers[m](h[m]) for m in MODALITIES}
        logits["fused"] = self.classifiers["fused"](torch.cat([h[m] for m in MODALITIES], dim=1))
        return logits

    def vote(self, logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Weighted soft voting on LOGITS (not probabilities), as released: sum_k w_k * logits_k."""
        weighted = [w * logits[k] for w, k in zip(self.vote_weights, HEADS, strict=True)]
        return torch.stack(weighted).sum(dim=0)

    def forward(
        self, inputs: Inputs, lengths: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Voted logits `[B, C]`; `lengths` is ignored (utterance-level inputs only)."""
        return self.vote(self.heads(self.encode(inputs)))

    def _modality_contrast(self, h: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return modality_contrastive(h, self.proj, self.contrast, self.temperature)

    def training_loss(
        self, inputs: Inputs, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(voted) + modality contrastive + mean over the 4 classifiers of CE(w_k * logits_k).

        The vote weight scales each classifier's logits before its CE, as in the released code,
        so a low-weight head trains at a higher effective temperature.
        """
        h = self.encode(inputs)
        logits = self.heads(h)
        ce = F.cross_entropy(self.vote(logits), y)
        contrast = self._modality_contrast(h)
        per_head = [
            F.cross_entropy(w * logits[k], y) for w, k in zip(self.vote_weights, HEADS, strict=True)
        ]
        heads_ce = torch.stack(per_head).mean()
        parts = {"ce": ce, "contrast": contrast, "heads_ce": heads_ce}
        return ce + contrast + heads_ce, {k: float(v.detach()) for k, v in parts.items()}

    def noisy_inputs(self, inputs: Inputs, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Each modality noised by the mild SEMI forward process (scaled_linear 0.001..0.1).

        One step t per modality per call, shared by the batch, and the Gaussian eps are all
        drawn from `generator` (a CPU generator; values do not depend on the device):
        x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps.
        """
        steps = self.noise_schedule.num_steps
        out = {}
        for m in MODALITIES:
            t = int(torch.randint(0, steps, (1,), generator=generator))
            out[m] = add_noise(inputs[m], t, self.noise_schedule, "gaussian", generator)
        return out

    def pretrain_loss(
        self, inputs: Inputs, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """No labels: modality contrast on clean inputs + clean-vs-noisy contrast per modality."""
        clean = self.encode(inputs)
        noisy = self.encode(self.noisy_inputs(inputs, generator))
        contrast = self._modality_contrast(clean)
        noise = noise_contrastive(clean, noisy, self.contrast, self.temperature)
        parts = {"contrast": contrast, "noise_contrast": noise}
        return contrast + noise, {k: float(v.detach()) for k, v in parts.items()}

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """Copies of the pretrained parts' weights: encoders, input linears, projections, temps."""
        return {
            k: v.detach().clone()
            for k, v in self.state_dict().items()
            if k.split(".", 1)[0] in PRETRAINED
        }

    def load_encoders(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load the pretrained parts from `state` (strict for them); other keys are ignored.

        The classifiers keep their fresh initialisation, so a full pretraining state dict or the
        output of `encoder_state` can be passed.
        """
        for prefix in PRETRAINED:
            sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
            getattr(self, prefix).load_state_dict(sub, strict=True)
