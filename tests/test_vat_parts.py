"""VAT's pieces against hand-computed values: the contrastive loss with and without the queue,
the queue's FIFO order, the temperature clamp, hard negatives, the EMA rule, distillation,
frame pooling and masking, option checks, and label-free alignment on a learnable sample.

The pipeline (pretrain -> train -> evaluate, missing patterns) is tested in test_vat.py.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustmer.config import ModelSpec
from robustmer.errors import ConfigError
from robustmer.models.sequence import pool_frames
from robustmer.models.vat import NETWORK_OPTIONS, OPTIONS, PRETRAIN_OPTIONS, check
from robustmer.models.vat.augment import mask_frames
from robustmer.models.vat.network import VAT, Momentum, distillation_loss
from robustmer.models.vat.pretrain import VATPretrain, hard_negatives, queue_capacity

DIMS = {"audio": 5, "video": 6}


def tiny_pretrain(queue_size: int = 4, embed_dim: int = 3, **kwargs: object) -> VATPretrain:
    torch.manual_seed(0)
    core = VAT(DIMS, 3, width=8, heads=2, video_layers=1, audio_layers=1, fusion_layers=1,
               dropout=0.0, max_frames=4)  # fmt: skip
    return VATPretrain(core, embed_dim=embed_dim, queue_size=queue_size, **kwargs)


def unit_rows(rng: np.random.Generator, n: int, d: int = 3) -> torch.Tensor:
    x = rng.normal(size=(n, d))
    return torch.tensor(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=torch.float32)


def soft_ce_by_hand(
    q: np.ndarray, keys: np.ndarray, q_m: np.ndarray, pos: np.ndarray, alpha: float, t: float
) -> float:
    """mean over rows of -sum_j target_ij log softmax_j(q_i . k_j / t), written out in loops."""
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k) / t for k in keys]
        m_logits = [float(q_m[i] @ k) / t for k in keys]
        z = math.log(sum(math.exp(v) for v in logits))
        zm = sum(math.exp(v) for v in m_logits)
        for j in range(len(keys)):
            target = alpha * math.exp(m_logits[j]) / zm + (1 - alpha) * pos[i, j]
            total -= target * (logits[j] - z)
    return total / len(q)


@pytest.mark.parametrize("with_queue", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_contrastive_loss_matches_a_hand_computed_value(with_queue: bool, alpha: float) -> None:
    rng = np.random.default_rng(1)
    model = tiny_pretrain(queue_size=4 if with_queue else 0)
    feats = {"video": unit_rows(rng, 3), "audio": unit_rows(rng, 3)}
    feats_m = {"video": unit_rows(rng, 3), "audio": unit_rows(rng, 3)}
    ids = torch.tensor([10, 11, 12])
    if with_queue:  # the queue holds an older copy of row 11: a positive of row 11, not a negative
        model.video_queue.copy_(unit_rows(rng, 4).T)
        model.audio_queue.copy_(unit_rows(rng, 4).T)
        model.id_queue.copy_(torch.tensor([3, 11, -1, 7]))
    t = float(model.temp.detach())
    loss, _ = model.contrastive(feats, feats_m, ids, alpha)

    q_ids = model.id_queue.numpy() if with_queue else np.array([], dtype=int)
    all_ids = np.concatenate([ids.numpy(), q_ids])
    pos = (ids.numpy()[:, None] == all_ids[None, :]).astype(float)
    pos /= pos.sum(axis=1, keepdims=True)
    if with_queue:
        assert pos[1, 4] == 0.5 and pos[1, 1] == 0.5  # the in-batch pair and the queued copy
    a_keys = np.concatenate([feats_m["audio"].numpy(), model.audio_queue.T.numpy()[: len(q_ids)]])
    v_keys = np.concatenate([feats_m["video"].numpy(), model.video_queue.T.numpy()[: len(q_ids)]])
    v2a = soft_ce_by_hand(feats["video"].numpy(), a_keys, feats_m["video"].numpy(), pos, alpha, t)
    a2v = soft_ce_by_hand(feats["audio"].numpy(), v_keys, feats_m["audio"].numpy(), pos, alpha, t)
    assert float(loss.detach()) == pytest.approx((v2a + a2v) / 2, rel=1e-5)


def test_the_queue_is_fifo_with_the_row_ids() -> None:
    model = tiny_pretrain(queue_size=4)
    assert model.video_queue.shape == (3, 4) and model.id_queue.tolist() == [-1] * 4
    rng = np.random.default_rng(2)
    batches = [unit_rows(rng, 2) for _ in range(3)]
    for k, b in enumerate(batches):
        model.enqueue({"video": b, "audio": -b}, torch.tensor([2 * k, 2 * k + 1]))
    # Six rows through a queue of four: the first batch was overwritten by the third.
    assert model.id_queue.tolist() == [4, 5, 2, 3]
    assert int(model.queue_ptr) == 2
    assert torch.equal(model.video_queue[:, 0:2], batches[2].T)
    assert torch.equal(model.video_queue[:, 2:4], batches[1].T)
    assert torch.equal(model.audio_queue[:, 2:4], -batches[1].T)


def test_queue_capacity_is_sized_to_the_data() -> None:
    assert queue_capacity(256, 438, 32) == 256  # the requested size fits: kept
    assert queue_capacity(256, 200, 32) == 160  # at most n - batch, a multiple of the batch
    assert queue_capacity(256, 40, 32) == 0  # smaller than two batches: no queue
    assert queue_capacity(0, 1000, 32) == 0


def test_the_temperature_is_clamped_to_its_bounds() -> None:
    model = tiny_pretrain()
    batch = {"audio": torch.randn(4, 5, 5), "video": torch.randn(4, 3, 6)}
    for start, expected in ((1.0, 0.5), (1e-5, 0.001), (0.2, 0.2)):
        with torch.no_grad():
            model.temp.fill_(start)
        model.loss(batch, None, torch.arange(4), steps_per_epoch=1)
        assert float(model.temp.detach()) == pytest.approx(expected)


def test_hard_negatives_are_never_the_positive_and_follow_the_similarities() -> None:
    sim = torch.tensor([[5.0, 2.0, 1.0, 0.0], [0.0, 5.0, 3.0, 0.0],
                        [1.0, 1.0, 5.0, 1.0], [2.0, 0.0, 0.0, 5.0]])  # fmt: skip
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([hard_negatives(sim, sim.T.contiguous(), g)[0] for _ in range(4000)])
    assert not (draws == torch.arange(4)).any()
    w = torch.softmax(sim, dim=1).fill_diagonal_(0)
    expected = (w / w.sum(dim=1, keepdim=True)).numpy()
    for row in range(4):
        freq = np.bincount(draws[:, row].numpy(), minlength=4) / len(draws)
        assert np.abs(freq - expected[row]).max() < 0.03, (row, freq, expected[row])


def test_matching_scores_three_b_pairs_and_skips_a_single_row() -> None:
    model = tiny_pretrain(queue_size=0)
    batch = {"audio": torch.randn(3, 5, 5), "video": torch.randn(3, 4, 6)}
    seen: list[int] = []
    head = model.vam_head
    model.vam_head = torch.nn.Sequential(  # records how many pairs reach the head
        torch.nn.Identity(), head
    )
    model.vam_head[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    _, parts = model.loss(batch, None, torch.arange(3), steps_per_epoch=1)
    assert seen == [9] and parts["vam"] > 0
    one = {k: v[:1] for k, v in batch.items()}
    _, parts = model.loss(one, None, torch.arange(1), steps_per_epoch=1)
    assert parts["vam"] == 0.0


def test_the_momentum_model_moves_by_the_ema_rule_and_gets_no_gradient() -> None:
    torch.manual_seed(0)
    net = VAT(DIMS, 3, width=8, heads=2, video_layers=1, audio_layers=1, dropout=0.0)
    net.attach_momentum(0.9)
    assert net.momentum is not None
    with torch.no_grad():  # the model moves away from its copy, as after an optimiser step
        for p in net.encoders.parameters():
            p.add_(0.5)
    before = {k: v.clone() for k, v in net.momentum.copies.state_dict().items()}
    params = {f"{n}.{k}": v.detach().clone() for n, m in net.trained_modules().items()
              for k, v in m.state_dict().items()}  # fmt: skip
    batch = {"audio": torch.randn(4, 5, 5), "video": torch.randn(4, 3, 6)}
    loss, _ = net.finetune_loss(batch, None, torch.tensor([0, 1, 2, 0]), alpha=0.4,
                                steps_per_epoch=2, weights={"fused": 1.0})  # fmt: skip
    loss.backward()
    for k, v in net.momentum.copies.state_dict().items():
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * params[k], atol=1e-6), k
    assert all(not p.requires_grad and p.grad is None for p in net.momentum.parameters())
    assert any(p.grad is not None for p in net.encoders.parameters())
    assert int(net.momentum.step) == 1


def test_alpha_ramps_over_the_first_epoch() -> None:
    mom = Momentum({"x": torch.nn.Linear(2, 2)}, 0.995)
    seen = []
    for _ in range(6):
        seen.append(mom.ramp(0.4, 4))
        mom.step += 1
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])


def test_distillation_at_alpha_zero_is_cross_entropy() -> None:
    torch.manual_seed(1)
    logits, teacher = torch.randn(5, 3), torch.randn(5, 3)
    y = torch.tensor([0, 2, 1, 1, 0])
    ce = F.cross_entropy(logits, y)
    assert torch.equal(distillation_loss(logits, y, teacher, 0.0), ce)
    soft = -(F.softmax(teacher, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(distillation_loss(logits, y, teacher, 0.4), 0.6 * ce + 0.4 * soft)
    # Through the network: alpha 0 with a momentum model is the weighted cross-entropy.
    net = VAT(DIMS, 3, width=8, heads=2, video_layers=1, audio_layers=1, dropout=0.0)
    batch = {"audio": torch.randn(5, 4, 5), "video": torch.randn(5, 3, 6)}
    plain, _ = net.finetune_loss(batch, None, y, alpha=0.0, steps_per_epoch=1,
                                 weights={"fused": 1.0, "audio": 0.5})  # fmt: skip
    net.attach_momentum(0.995)
    distilled, _ = net.finetune_loss(batch, None, y, alpha=0.0, steps_per_epoch=1,
                                     weights={"fused": 1.0, "audio": 0.5})  # fmt: skip
    out = net.branches(batch, None)
    expected = F.cross_entropy(out["fused"], y) + 0.5 * F.cross_entropy(out["audio"], y)
    assert torch.allclose(plain, expected) and torch.allclose(distilled, expected)


def test_pool_frames_means_groups_of_real_frames() -> None:
    x = torch.arange(1.0, 11.0).view(1, 10, 1).repeat(2, 1, 1)
    lengths = torch.tensor([10, 3])
    pooled, lens = pool_frames(x, lengths, 4)
    # 10 frames in groups of 3: [1,2,3] [4,5,6] [7,8,9] [10]; 3 frames stay 3 frames.
    assert pooled[0, :, 0].tolist() == [2.0, 5.0, 8.0, 10.0] and lens.tolist() == [4, 3]
    assert pooled[1, :3, 0].tolist() == [1.0, 2.0, 3.0]
    vec, one = pool_frames(torch.ones(2, 7), None, 4)
    assert vec.shape == (2, 1, 7) and one.tolist() == [1, 1]


def test_padding_and_empty_sequences_do_not_change_the_output() -> None:
    torch.manual_seed(0)
    net = VAT(DIMS, 3, width=8, heads=2, video_layers=1, audio_layers=1, dropout=0.0).eval()
    audio, video = torch.randn(1, 4, 5), torch.randn(1, 3, 6)
    alone = net({"audio": audio, "video": video}, {"audio": torch.tensor([4]),
                                                   "video": torch.tensor([3])})  # fmt: skip
    padded = net(
        {"audio": torch.cat([audio, torch.randn(1, 2, 5)], 1),
         "video": torch.cat([video, torch.randn(1, 5, 6)], 1)},
        {"audio": torch.tensor([4]), "video": torch.tensor([3])},
    )  # fmt: skip
    assert torch.allclose(alone, padded, atol=1e-5)
    no_face = net({"audio": audio, "video": torch.zeros(1, 1, 6)},
                  {"audio": torch.tensor([4]), "video": torch.tensor([0])})  # fmt: skip
    assert torch.isfinite(no_face).all()


def test_frame_masking_zeroes_spans_within_the_real_frames() -> None:
    x = torch.ones(3, 10, 8)
    g = torch.Generator().manual_seed(3)
    out = mask_frames({"audio": x, "text": torch.ones(3, 4)}, {"audio": torch.tensor([10, 6, 2])},
                      0.5, 0.5, g, ("audio", "text"))  # fmt: skip
    assert torch.equal(out["text"], torch.ones(3, 4))  # vectors untouched
    zero_frames = (out["audio"] == 0).all(dim=2)
    assert zero_frames[1, 6:].logical_not().all()  # the span lies within the real frames
    assert (out["audio"] == 0).any()
    assert mask_frames({"audio": x}, None, 0.0, 0.0, g)["audio"] is x


def test_option_defaults_are_the_networks_defaults() -> None:
    for cls, declared in ((VAT, NETWORK_OPTIONS), (VATPretrain, PRETRAIN_OPTIONS)):
        sig = inspect.signature(cls).parameters
        for key, value in declared.items():
            if key in sig:
                assert sig[key].default == value, (cls, key)
    assert set(NETWORK_OPTIONS) <= set(inspect.signature(VAT).parameters)
    assert set(OPTIONS) >= set(NETWORK_OPTIONS) | set(PRETRAIN_OPTIONS)


@pytest.mark.parametrize(("change", "message"), [
    ({"features": {"audio": "a"}}, "vat reads audio and video"),
    ({"options": {"heads": 5}}, "options.heads"),
    ({"options": {"momentum": 1.0}}, "options.momentum"),
    ({"options": {"temp": 0.9}}, "options.temp"),
    ({"options": {"alpha": -0.1}}, "options.alpha"),
])  # fmt: skip
def test_bad_entries_are_refused_with_the_key(change: dict, message: str) -> None:
    entry = {"name": "vat", "arch": "vat", "features": {"audio": "a", "video": "v"},
             "hidden_dim": 16, "dropout": 0.1, "num_layers": 1, "options": {},
             **change}  # fmt: skip
    spec = ModelSpec(**{k: v for k, v in entry.items()
                        if k in inspect.signature(ModelSpec).parameters})  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        check(spec)


def test_pretraining_aligns_pairs_on_a_learnable_sample() -> None:
    """Video and audio frames are two noisy views of one latent per utterance: after label-free
    pretraining, a pair's similarity is well above the similarity to other utterances."""
    rng = np.random.default_rng(0)
    n, d = 64, 6
    latent = rng.normal(size=(n, d))
    mix_a, mix_v = rng.normal(size=(d, 5)), rng.normal(size=(d, 6))

    def view(mix: np.ndarray, frames: int) -> torch.Tensor:
        x = latent[:, None, :] @ mix + 0.3 * rng.normal(size=(n, frames, mix.shape[1]))
        return torch.tensor(x, dtype=torch.float32)

    data = {"audio": view(mix_a, 6), "video": view(mix_v, 4)}
    model = tiny_pretrain(queue_size=32, embed_dim=16)

    def alignment() -> tuple[float, float]:
        """(mean positive minus mean negative similarity, share of videos whose most similar
        audio is their own)."""
        model.eval()
        with torch.no_grad():
            _, feats = model.features(data, None)
        sim = feats["video"] @ feats["audio"].T
        off = (sim.sum() - sim.diag().sum()) / (n * (n - 1))
        top1 = (sim.argmax(dim=1) == torch.arange(n)).float().mean()
        return float(sim.diag().mean() - off), float(top1)

    gap_before, top1_before = alignment()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        model.train()
        for idx in torch.randperm(n, generator=g).split(16):
            loss, _ = model.loss({k: v[idx] for k, v in data.items()}, None, idx,
                                 steps_per_epoch=4, generator=g)  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
    gap_after, top1_after = alignment()
    assert gap_after > gap_before + 0.3 and gap_after > 0.3, (gap_before, gap_after)
    assert top1_after > 0.25 > top1_before, (top1_before, top1_after)  # chance: 1/64
