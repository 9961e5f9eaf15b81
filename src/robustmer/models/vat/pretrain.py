"""VAT's label-free pretraining (ALBEF with text replaced by audio): video-audio contrast with a
queue of momentum features and momentum-distilled soft targets, and video-audio matching with
in-batch hard negatives.

`VATPretrain` wraps the `VAT` that fine-tuning starts from (`core`) and adds what only
pretraining needs: the 256-d projections, the learnable temperature, the matching head, the
momentum copies of the encoders and projections, and the feature queues. Its checkpoint lives in
`models/<ds>/<m>.pretrain/`; fine-tuning loads the `core.` weights (`core_state`).

Stale copies of a sample: the queue also stores each entry's row id. A queue entry with the row's
own id (its momentum feature from an earlier step) is a positive of that row, like the
in-batch pair, never a negative (ALBEF's retrieval fine-tuning does the same with image ids).
The recipe also caps the queue at the largest multiple of the batch that is at most
`n_rows - batch`: every epoch enqueues all n_rows rows, so a copy from two epochs back is always
gone and a row meets at most one earlier copy of itself, which then counts as a positive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustmer.models.vat.network import VAT, Momentum

TEMP_BOUNDS = (0.001, 0.5)


class VATPretrain(nn.Module):
    """Pretraining heads around a `VAT` (see the module docstring)."""

    handles_missing = False

    def __init__(
        self,
        core: VAT,
        embed_dim: int = 256,
        temp: float = 0.07,
        queue_size: int = 256,
        momentum: float = 0.995,
        alpha: float = 0.4,
        matching: bool = True,
    ):
        super().__init__()
        width = core.heads["fused"].in_features
        self.core = core
        self.proj = nn.ModuleDict({m: nn.Linear(width, embed_dim) for m in ("audio", "video")})
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.matching = bool(matching)
        self.vam_head = nn.Linear(width, 2)
        self.alpha = float(alpha)
        self.momentum = Momentum({"encoders": core.encoders, "proj": self.proj}, momentum)
        self.queue_size = int(queue_size)
        for m in ("audio", "video"):
            self.register_buffer(
                f"{m}_queue", F.normalize(torch.randn(embed_dim, self.queue_size), dim=0)
            )
        # Row ids of the queued features; -1: an initial random entry (a negative of every row).
        self.register_buffer("id_queue", torch.full((self.queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def forward(
        self, inputs: dict[str, torch.Tensor], lengths: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        return self.core(inputs, lengths)

    def features(
        self,
        inputs: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor] | None,
        momentum: bool = False,
    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]:
        """Tokens of every stream, and the L2-normalised projections of the audio/video [CLS]."""
        enc = self.momentum.copies["encoders"] if momentum else None
        proj = self.momentum.copies["proj"] if momentum else self.proj
        tokens = self.core.encode(inputs, lengths, enc)
        feats = {m: F.normalize(proj[m](tokens[m][0][:, 0]), dim=-1) for m in ("audio", "video")}
        return tokens, feats

    def loss(
        self,
        inputs: dict[str, torch.Tensor],
        lengths: dict[str, torch.Tensor] | None,
        ids: torch.Tensor,
        *,
        steps_per_epoch: int,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """VAC + VAM for one batch of rows `ids`; updates the momentum model and the queue."""
        with torch.no_grad():
            self.temp.clamp_(*TEMP_BOUNDS)
        alpha = self.momentum.advance(self.alpha, steps_per_epoch, self.training)
        tokens, feats = self.features(inputs, lengths)
        with torch.no_grad():
            self.momentum.update({"encoders": self.core.encoders, "proj": self.proj})
            _, feats_m = self.features(inputs, lengths, momentum=True)
        vac, sims = self.contrastive(feats, feats_m, ids, alpha)
        parts = {"vac": float(vac.detach()), "temp": float(self.temp.detach()), "alpha": alpha}
        total = vac
        if self.matching:
            vam = self.matching_loss(tokens, sims, generator)
            total = total + vam
            parts["vam"] = float(vam.detach())
        if self.training:
            self.enqueue(feats_m, ids)
        return total, parts

    def contrastive(
        self,
        feats: dict[str, torch.Tensor],
        feats_m: dict[str, torch.Tensor],
        ids: torch.Tensor,
        alpha: float,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ALBEF's ITA with audio for text: soft cross-entropy of v->a and a->v, averaged.

        Candidates are the batch's momentum features followed by the queue; a candidate is a
        positive when its row id is the row's own (the in-batch pair and any queued copy of the
        same sample), and the targets are `alpha * softmax(momentum sims) + (1 - alpha) * pos`.
        Returns the loss and the student's similarities (for hard-negative mining).
        """
        v_all = torch.cat([feats_m["video"].t(), self.video_queue.clone().detach()], dim=1)
        a_all = torch.cat([feats_m["audio"].t(), self.audio_queue.clone().detach()], dim=1)
        id_all = torch.cat([ids, self.id_queue.clone().detach()])
        pos = (ids.unsqueeze(1) == id_all.unsqueeze(0)).float()
        pos = pos / pos.sum(dim=1, keepdim=True)
        with torch.no_grad():
            sim_v2a_m = feats_m["video"] @ a_all / self.temp
            sim_a2v_m = feats_m["audio"] @ v_all / self.temp
            t_v2a = alpha * F.softmax(sim_v2a_m, dim=1) + (1 - alpha) * pos
            t_a2v = alpha * F.softmax(sim_a2v_m, dim=1) + (1 - alpha) * pos
        sim_v2a = feats["video"] @ a_all / self.temp
        sim_a2v = feats["audio"] @ v_all / self.temp
        loss_v2a = -(F.log_softmax(sim_v2a, dim=1) * t_v2a).sum(dim=1).mean()
        loss_a2v = -(F.log_softmax(sim_a2v, dim=1) * t_a2v).sum(dim=1).mean()
        return (loss_v2a + loss_a2v) / 2, {"v2a": sim_v2a, "a2v": sim_a2v}

    def matching_loss(
        self,
        tokens: dict[str, tuple[torch.Tensor, torch.Tensor]],
        sims: dict[str, torch.Tensor],
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """ALBEF's ITM: B positive pairs, and for each row one hard negative in each direction
        drawn with probability softmax(similarity) over the other rows of the batch (diagonal
        zeroed); a 2-way head on the fused [CLS] of the 3B pairs."""
        batch = sims["v2a"].shape[0]
        if batch < 2:  # no other row to pair with
            return sims["v2a"].new_zeros(())
        negatives = hard_negatives(sims["a2v"][:, :batch], sims["v2a"][:, :batch], generator)
        neg_video, neg_audio = negatives
        pairs = [
            tokens,
            {**tokens, "video": _take(tokens["video"], neg_video)},  # each audio, a wrong video
            {**tokens, "audio": _take(tokens["audio"], neg_audio)},  # each video, a wrong audio
        ]
        if "text" in tokens:  # text stays with the audio it was said with
            pairs[2]["text"] = _take(tokens["text"], neg_audio)
        fused = torch.cat([self.core.fuse(p) for p in pairs])
        labels = torch.cat(
            [torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)]
        ).to(fused.device)
        return F.cross_entropy(self.vam_head(fused), labels)

    @torch.no_grad()
    def enqueue(self, feats_m: dict[str, torch.Tensor], ids: torch.Tensor) -> None:
        """FIFO: write the batch's momentum features at the pointer (wrapping), move it on."""
        if self.queue_size == 0:
            return
        n = ids.shape[0]
        slots = (self.queue_ptr + torch.arange(n, device=ids.device)) % self.queue_size
        keep = slice(max(n - self.queue_size, 0), n)  # a batch larger than the queue: its last
        self.video_queue[:, slots[keep]] = feats_m["video"][keep].t()
        self.audio_queue[:, slots[keep]] = feats_m["audio"][keep].t()
        self.id_queue[slots[keep]] = ids[keep]
        self.queue_ptr.copy_((self.queue_ptr + n) % self.queue_size)

    def core_state(self) -> dict[str, torch.Tensor]:
        """The pretrained `VAT` weights (encoders, fusion; heads too, replaced by fine-tuning)."""
        return {k[5:]: v for k, v in self.state_dict().items() if k.startswith("core.")}


def hard_negatives(
    sim_a2v: torch.Tensor, sim_v2a: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, a video index for its audio and an audio index for its video, drawn with
    weights softmax(sim) over the batch with the diagonal (the positive) set to zero."""
    with torch.no_grad():
        w_a2v = F.softmax(sim_a2v.float(), dim=1) + 1e-5
        w_a2v.fill_diagonal_(0)
        w_v2a = F.softmax(sim_v2a.float(), dim=1) + 1e-5
        w_v2a.fill_diagonal_(0)
        device = sim_a2v.device
        g = generator
        neg_video = torch.multinomial(w_a2v.cpu(), 1, generator=g).squeeze(1).to(device)
        neg_audio = torch.multinomial(w_v2a.cpu(), 1, generator=g).squeeze(1).to(device)
    return neg_video, neg_audio


def _take(
    stream: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    return stream[0][rows], stream[1][rows]


def queue_capacity(requested: int, n_rows: int, batch_size: int) -> int:
    """The queue size used on this data: `requested` (a multiple of the batch), capped at the
    largest multiple of the batch that is at most `n_rows - batch_size`, so a row meets at most
    one earlier copy of itself; 0 when the data is smaller than two batches."""
    if requested <= 0 or batch_size <= 0:
        return 0
    cap = max(n_rows - batch_size, 0) // batch_size * batch_size
    return min(requested, cap)
