"""NMER (Fan et al. 2023): noise-robust joint representation for incomplete multimodal data.

Two stages, re-implemented from the paper and the behaviour of its released code (an
IF-MMIN/MMIN fork):

1. `NMERStage1` ("utt_shared"): per-modality specific and invariant encoders trained on clean,
   complete data with cross-entropy plus a CMD loss that aligns the invariant (shared) features.
2. `NMER`: the same encoders, initialised from stage 1, see inputs whose *missing* modalities
   are replaced by diffusion-noised features (not zeros); a conditional VAE maps the specific
   features, conditioned on the shared ones, to a joint representation that is distilled from
   a frozen stage-1 teacher run on the clean inputs.

Modalities are always concatenated in the order audio, text, video (the paper's A, L, V).
Inputs are zero-padded `[B, T, D]` frame tensors or `[B, D]` utterance vectors; `lengths`
arguments exist for pipeline compatibility and are ignored, as the released encoders run on the
unpacked padded tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustmer.corruption.feature_noise import NoiseSchedule, mask_noise, schedule

MODALITY_ORDER = ("audio", "text", "video")
LEVELS = ("frame", "utterance")
VAE_ATTENTION = ("per_sample", "batch_as_sequence")

Inputs = Mapping[str, torch.Tensor]


class TextCNN(nn.Module):
    """Kim-style TextCNN over token/frame features, as the released text encoder.

    Sequences shorter than the widest kernel are zero-padded so every convolution has at least
    one output position (short utterances would otherwise crash the max-pool).

    The weights are the released `Conv2d(1, C, (k, D))` kernels (so checkpoints keep their
    shape), but the forward pass runs them as the equal `conv1d` over `[B, D, T]`: a kernel that
    spans the whole feature axis is a 1-D convolution with D input channels, which CPU backends
    compute about twice as fast (forward and backward). Only the summation order differs
    (outputs agree to ~1e-5 relative).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 128,
        channels: int = 128,
        kernels: Sequence[int] = (3, 4, 5),
        dropout: float = 0.5,
    ):
        super().__init__()
        self.kernels = tuple(int(k) for k in kernels)
        self.convs = nn.ModuleList(nn.Conv2d(1, channels, (k, in_dim)) for k in self.kernels)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * len(self.kernels), out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"TextCNN expects [B, T, D] input, got {tuple(x.shape)}")
        short = max(self.kernels) - x.shape[1]
        if short > 0:
            x = F.pad(x, (0, 0, 0, short))
        channels_first = x.transpose(1, 2)  # [B, D, T]
        pooled = [
            F.relu(
                F.conv1d(channels_first, conv.weight.squeeze(1).transpose(1, 2), conv.bias)
            ).amax(dim=2)
            for conv in self.convs
        ]  # each [B, C]: conv.weight [C, 1, k, D] read as a conv1d kernel [C, D, k]
        return F.relu(self.fc(self.dropout(torch.cat(pooled, dim=1))))


class MaxPoolLSTM(nn.Module):
    """LSTM over the padded sequence, max-pooled over ALL steps (padding included).

    Faithful to the released code, which neither packs nor masks: the LSTM keeps producing
    outputs on the zero frames and those take part in the max.
    """

    def __init__(self, in_dim: int, hidden: int = 128):
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=1, batch_first=True)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"MaxPoolLSTM expects [B, T, D] input, got {tuple(x.shape)}")
        if x.shape[1] == 0:  # no frames at all: encode one zero frame instead of failing
            x = x.new_zeros(x.shape[0], 1, x.shape[2])
        out, _ = self.lstm(x)
        return out.amax(dim=1)


class UtteranceEncoder(nn.Module):
    """Linear -> ReLU: adaptation for utterance-level vectors (e.g. sentence embeddings)."""

    def __init__(self, in_dim: int, hidden: int = 128):
        super().__init__()
        self.fc = nn.Linear(in_dim, hidden)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"utterance encoder expects [B, D] input, got {tuple(x.shape)}")
        return F.relu(self.fc(x))


def modality_encoder(modality: str, in_dim: int, level: str, hidden: int = 128) -> nn.Module:
    """The released encoder for one modality: LSTM (A, V) or TextCNN (L) on frames, else MLP."""
    if modality not in MODALITY_ORDER:
        raise ValueError(f"unknown modality {modality!r}; NMER uses {MODALITY_ORDER}")
    if level == "utterance":
        return UtteranceEncoder(in_dim, hidden)
    if level != "frame":
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if modality == "text":
        return TextCNN(in_dim, out_dim=hidden)
    return MaxPoolLSTM(in_dim, hidden)


class SharedEncoder(nn.Module):
    """One MLP applied to every modality's invariant features, projecting them to a common space."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden), nn.LeakyReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FcClassifier(nn.Module):
    """MMIN's classifier: hidden layers Linear -> ReLU -> [BatchNorm] -> Dropout, then Linear."""

    def __init__(
        self,
        in_dim: int,
        layers: Sequence[int],
        n_classes: int,
        dropout: float = 0.0,
        use_bn: bool = False,
    ):
        super().__init__()
        modules: list[nn.Module] = []
        width = in_dim
        for size in layers:
            modules += [nn.Linear(width, size), nn.ReLU()]
            if use_bn:
                modules.append(nn.BatchNorm1d(size))
            if dropout > 0:
                modules.append(nn.Dropout(dropout))
            width = size
        self.hidden = nn.Sequential(*modules)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def cmd_loss(x1: torch.Tensor, x2: torch.Tensor, n_moments: int = 5) -> torch.Tensor:
    """Central moment discrepancy between two feature batches `[B, H]`.

    L2 distance of the means plus of the central moments 2..n_moments (per feature, over the
    batch); it matches distributions without a discriminator.
    """
    m1, m2 = x1.mean(dim=0), x2.mean(dim=0)
    c1, c2 = x1 - m1, x2 - m2
    loss = torch.linalg.vector_norm(m1 - m2)
    for k in range(2, n_moments + 1):
        loss = loss + torch.linalg.vector_norm(c1.pow(k).mean(dim=0) - c2.pow(k).mean(dim=0))
    return loss


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), SUMMED over batch and latent dims as released."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights and zero biases for every Linear/Conv (MMIN's `init_net`).

    Applied before pretrained encoder weights are loaded, so only the new parts keep it.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def _check_modalities(input_dims: Mapping[str, int]) -> None:
    missing = [m for m in MODALITY_ORDER if m not in input_dims]
    extra = sorted(set(input_dims) - set(MODALITY_ORDER))
    if missing or extra:
        raise ValueError(
            f"NMER needs exactly the modalities {MODALITY_ORDER}; "
            f"missing {missing}, unexpected {extra}"
        )


class _Encoders(nn.Module):
    """Specific + invariant encoders and the shared projection, common to both stages.

    Attribute names (`spec`, `inv`, `shared`) are the stage-1 state-dict prefixes that stage 2
    loads by name.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        levels: Mapping[str, str] | None,
        hidden: int,
        frame_pool: Mapping[str, int] | None = None,
    ):
        super().__init__()
        _check_modalities(input_dims)
        self.frame_pool = {m: int(k) for m, k in (frame_pool or {}).items() if int(k) > 1}
        levels = dict(levels or {})
        self.levels = {m: levels.get(m, "utterance") for m in MODALITY_ORDER}
        self.hidden = hidden
        self.spec = nn.ModuleDict(
            {m: modality_encoder(m, input_dims[m], self.levels[m], hidden) for m in MODALITY_ORDER}
        )
        self.inv = nn.ModuleDict(
            {m: modality_encoder(m, input_dims[m], self.levels[m], hidden) for m in MODALITY_ORDER}
        )
        self.shared = SharedEncoder(hidden)

    def encode(self, inputs: Inputs) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(specific features, Shared(invariant) features) per modality, each `[B, hidden]`."""
        inputs = {m: self._pooled(m, inputs[m]) for m in MODALITY_ORDER}
        spec = {m: self.spec[m](inputs[m]) for m in MODALITY_ORDER}
        shared = {m: self.shared(self.inv[m](inputs[m])) for m in MODALITY_ORDER}
        return spec, shared

    def sub_networks(self) -> dict[str, nn.Module]:
        """Sub-networks whose gradient norms are clipped separately, as in the released code."""
        nets: dict[str, nn.Module] = {f"spec_{m}": self.spec[m] for m in MODALITY_ORDER}
        nets.update({f"inv_{m}": self.inv[m] for m in MODALITY_ORDER})
        nets["shared"] = self.shared
        return nets

    def _pooled(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Mean over windows of `frame_pool[modality]` frames (MMIN's x10 downsampling analogue)."""
        k = self.frame_pool.get(modality, 1)
        if k == 1 or x.dim() != 3 or x.shape[1] == 0:
            return x
        return F.avg_pool1d(x.transpose(1, 2), k, k, ceil_mode=True).transpose(1, 2)


class NMERStage1(_Encoders):
    """Stage 1 ("utt_shared"): full, clean modalities; CE on all six features + CMD.

    The released stage-1 loss also has a Diff/UNet reconstruction term; it is dropped here, as
    the NMER paper's stage 1 is trained with CE + CMD only.
    """

    def __init__(
        self,
        input_dims: Mapping[str, int],
        levels: Mapping[str, str] | None,
        n_classes: int,
        hidden: int = 128,
        dropout: float = 0.2,
        frame_pool: Mapping[str, int] | None = None,
    ):
        super().__init__(input_dims, levels, hidden, frame_pool)
        self.classifier = FcClassifier(6 * hidden, [128, 128], n_classes, dropout, use_bn=False)
        kaiming_init(self)

    def _logits(
        self, spec: Mapping[str, torch.Tensor], shared: Mapping[str, torch.Tensor]
    ) -> torch.Tensor:
        feats = [spec[m] for m in MODALITY_ORDER] + [shared[m] for m in MODALITY_ORDER]
        return self.classifier(torch.cat(feats, dim=1))

    def forward(
        self, inputs: Inputs, lengths: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self._logits(*self.encode(inputs))

    def sub_networks(self) -> dict[str, nn.Module]:
        return {**super().sub_networks(), "classifier": self.classifier}

    def training_loss(
        self, inputs: Inputs, lengths: Mapping[str, torch.Tensor] | None, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE + CMD averaged over the shared-feature pairs (L, V), (L, A), (A, V)."""
        spec, shared = self.encode(inputs)
        ce = F.cross_entropy(self._logits(spec, shared), y)
        a, t, v = (shared[m] for m in MODALITY_ORDER)
        cmd = (cmd_loss(t, v) + cmd_loss(t, a) + cmd_loss(a, v)) / 3
        return ce + cmd, {"ce": float(ce.detach()), "cmd": float(cmd.detach())}


class ConditionVAE(nn.Module):
    """Conditional VAE: Transformer encoder on cat(x, c) -> (mu, logvar); MLP decoder on (z, c).

    `attention="per_sample"` (default) feeds each sample as its own length-1 sequence, so a
    prediction never depends on the rest of the batch. `"batch_as_sequence"` reproduces the
    released code, which hands the `[B, x+c]` matrix to a sequence-first encoder so the batch
    becomes one sequence and samples attend to each other.
    """

    def __init__(
        self,
        x_dim: int = 384,
        c_dim: int = 384,
        latent: int = 64,
        nhead: int = 8,
        ff: int = 128,
        layers: int = 5,
        dropout: float = 0.1,
        attention: str = "per_sample",
    ):
        super().__init__()
        if attention not in VAE_ATTENTION:
            raise ValueError(f"attention must be one of {VAE_ATTENTION}, got {attention!r}")
        self.attention = attention
        d_model = x_dim + c_dim
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward=ff, dropout=dropout, activation="relu",
            batch_first=False, norm_first=False,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.fc_mu = nn.Linear(d_model, latent)
        self.fc_logvar = nn.Linear(d_model, latent)
        self.dec1 = nn.Linear(latent + c_dim, 128)
        self.dec2 = nn.Linear(128, x_dim)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.cat([x, c], dim=1)
        if self.attention == "per_sample":
            h = self.encoder(h.unsqueeze(0)).squeeze(0)  # [1, B, d]: B sequences of length 1
        else:
            h = self.encoder(h.unsqueeze(1)).squeeze(1)  # [B, 1, d]: one sequence of length B
        mu, logvar = self.fc_mu(h), self.fc_logvar(h)
        # Sampled in eval too, as released: predictions are stochastic at test time.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = torch.sigmoid(self.dec2(F.leaky_relu(self.dec1(torch.cat([z, c], dim=1)))))
        return recon, mu, logvar


class NMER(_Encoders):
    """Stage 2: noise-scheduled missing modalities, conditional VAE, distillation from stage 1.

    `residual=True` (default, the paper's final MRCN_1) adds F_miss to the VAE output before the
    classifier and the reconstruction loss; `False` matches the latest released code.
    """

    handles_missing = True

    def __init__(
        self,
        input_dims: Mapping[str, int],
        levels: Mapping[str, str] | None,
        n_classes: int,
        hidden: int = 128,
        residual: bool = True,
        vae_attention: str = "per_sample",
        noise_kind: str = "gaussian",
        noise_steps: int = 100,
        classifier_dropout: float = 0.1,
        frame_pool: Mapping[str, int] | None = None,
    ):
        super().__init__(input_dims, levels, hidden, frame_pool)
        if noise_kind not in ("gaussian", "impulse"):
            raise ValueError(f"noise_kind must be 'gaussian' or 'impulse', got {noise_kind!r}")
        self.residual = bool(residual)
        self.noise_kind = noise_kind
        self.noise_schedule: NoiseSchedule = schedule("nmer", noise_steps)
        width = len(MODALITY_ORDER) * hidden
        self.vae = ConditionVAE(width, width, attention=vae_attention)
        self.classifier = FcClassifier(
            width, [128, 128], n_classes, classifier_dropout, use_bn=True
        )
        kaiming_init(self)

    def load_stage1(self, stage1_state: Mapping[str, torch.Tensor]) -> None:
        """Copy the stage-1 `spec.*`, `inv.*` and `shared.*` weights (strict for those keys)."""
        for prefix in ("spec", "inv", "shared"):
            sub = {
                k[len(prefix) + 1 :]: v
                for k, v in stage1_state.items()
                if k.startswith(prefix + ".")
            }
            getattr(self, prefix).load_state_dict(sub, strict=True)

    def noisy_inputs(
        self, inputs: Inputs, present: Mapping[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Missing rows replaced by diffusion-noised features; present rows stay clean.

        One step t ~ U{0..T-1} per modality per call, shared by the batch. The generator is
        seeded from torch's global RNG so results follow `torch.manual_seed`, while noise is
        still drawn on CPU (device-independent values).
        """
        out = dict(inputs)
        if present is None:
            return out
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        gen = torch.Generator().manual_seed(seed)
        steps = self.noise_schedule.num_steps
        for m in MODALITY_ORDER:
            if m not in present or m not in inputs:
                continue
            t = int(torch.randint(0, steps, (1,), generator=gen))
            out[m] = mask_noise(inputs[m], present[m], t, self.noise_schedule, self.noise_kind, gen)
        return out

    def parts(
        self, inputs: Inputs, present: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Intermediate tensors of one forward pass on the noise-scheduled inputs."""
        spec, shared = self.encode(self.noisy_inputs(inputs, present))
        f_miss = torch.cat([spec[m] for m in MODALITY_ORDER], dim=1)
        h_miss = torch.cat([shared[m] for m in MODALITY_ORDER], dim=1)
        x_recon, mu, logvar = self.vae(f_miss, h_miss)
        if self.residual:
            x_recon = x_recon + f_miss
        return {
            "logits": self.classifier(x_recon),
            "x_recon": x_recon,
            "mu": mu,
            "logvar": logvar,
            "F_miss": f_miss,
            "H_miss": h_miss,
        }

    def forward(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None = None,
        present: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.parts(inputs, present)["logits"]

    def training_loss(
        self,
        inputs: Inputs,
        lengths: Mapping[str, torch.Tensor] | None,
        y: torch.Tensor,
        present: Mapping[str, torch.Tensor] | None,
        teacher: NMERStage1,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE + MSE(teacher invariant, H_miss) + MSE(x_recon, teacher specific) + KL (summed).

        The teacher sees the CLEAN inputs, without gradients and in eval mode (its dropout off,
        so the targets are deterministic); its previous train/eval mode is restored.
        """
        was_training = teacher.training
        teacher.eval()
        try:
            with torch.no_grad():
                t_spec, t_shared = teacher.encode(inputs)
                t_embds = torch.cat([t_spec[m] for m in MODALITY_ORDER], dim=1)
                invariant = torch.cat([t_shared[m] for m in MODALITY_ORDER], dim=1)
        finally:
            teacher.train(was_training)
        out = self.parts(inputs, present)
        ce = F.cross_entropy(out["logits"], y)
        inv_mse = F.mse_loss(invariant, out["H_miss"])
        recon_mse = F.mse_loss(out["x_recon"], t_embds)
        kl = kl_divergence(out["mu"], out["logvar"])
        total = ce + inv_mse + recon_mse + kl
        parts = {"ce": ce, "inv_mse": inv_mse, "recon_mse": recon_mse, "kl": kl}
        return total, {k: float(v.detach()) for k, v in parts.items()}

    def sub_networks(self) -> dict[str, nn.Module]:
        return {**super().sub_networks(), "vae": self.vae, "classifier": self.classifier}
