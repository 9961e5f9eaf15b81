"""MER2024-SEMI parts: NT-Xent (intended and released), SemiNet, pseudo-label selection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustmer.models.missing import zero_missing
from robustmer.models.semi.losses import (
    Temperature,
    modality_contrastive,
    noise_contrastive,
    nt_xent,
    nt_xent_released,
)
from robustmer.models.semi.network import PRETRAINED, SemiNet, pick_nhead
from robustmer.models.semi.pseudo import (
    adaptive_thresholds,
    class_thresholds,
    oversample,
    select_confident,
)

DIMS = {"audio": 6, "video": 5, "text": 8}
N_CLASSES = 3
SMALL = {"hidden": 16, "ff_dim": 32, "classifier_layers": (16,), "dropout": 0.1}

# Rows of different norms (1, 2, 3, 1) whose directions are (1,0), (0,1) | (1,0), (0,-1).
Z_I = [[1.0, 0.0], [0.0, 2.0]]
Z_J = [[3.0, 0.0], [0.0, -1.0]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: intra-op threads only add contention on a shared CPU (36x slower seen)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_net(seed: int = 0, **kw) -> SemiNet:
    torch.manual_seed(seed)
    return SemiNet(DIMS, N_CLASSES, **{**SMALL, **kw})


def toy_data(n: int = 60, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Class-dependent means in every modality (learnable), plus unit noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % N_CLASSES
    inputs = {}
    for m, d in DIMS.items():
        means = 2.0 * torch.randn(N_CLASSES, d, generator=g)
        inputs[m] = means[y] + torch.randn(n, d, generator=g)
    return inputs, y


# --- losses ---------------------------------------------------------------------------------


def test_nt_xent_matches_hand_computed_value():
    # Normalised rows a1=(1,0), a2=(0,1), b1=(1,0), b2=(0,-1), tau=0.5 (logits = 2 * cosine).
    # a1: positive b1 (cos 1), others a2, b2 (cos 0)  -> log(2 + e^2) - 2   (b1 the same)
    # a2: positive b2 (cos -1), others a1, b1 (cos 0) -> log(2 + e^-2) + 2  (b2 the same)
    expected = (math.log(2 + math.exp(2)) + math.log(2 + math.exp(-2))) / 2
    got = nt_xent(torch.tensor(Z_I), torch.tensor(Z_J), 0.5)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_released_matches_hand_computed_value():
    # Raw Gram matrix of (1,0), (0,2), (3,0), (0,-1), divided by tau twice (x4), diagonal targets.
    e = math.exp
    rows = [
        math.log(e(4) + 1 + e(12) + 1) - 4,
        math.log(1 + e(16) + 1 + e(-8)) - 16,
        math.log(e(12) + 1 + e(36) + 1) - 36,
        math.log(1 + e(-8) + 1 + e(4)) - 4,
    ]
    got = nt_xent_released(torch.tensor(Z_I), torch.tensor(Z_J), 0.5)
    assert float(got) == pytest.approx(sum(rows) / 4, rel=1e-5)
    assert abs(float(got) - float(nt_xent(torch.tensor(Z_I), torch.tensor(Z_J), 0.5))) > 0.1


def test_nt_xent_training_aligns_pairs():
    torch.manual_seed(0)
    x = torch.randn(32, 8)
    y = x @ torch.randn(8, 8) + 0.05 * torch.randn(32, 8)
    f, g = nn.Linear(8, 4), nn.Linear(8, 4)
    opt = torch.optim.Adam([*f.parameters(), *g.parameters()], lr=0.05)

    def pair_cos() -> float:
        with torch.no_grad():
            return float(F.cosine_similarity(f(x), g(y), dim=1).mean())

    cos0, losses = pair_cos(), []
    for _ in range(40):
        loss = nt_xent(f(x), g(y), 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert pair_cos() > cos0 + 0.3


def test_temperature_intended_is_one_bounded_value_and_released_is_nine():
    temp = Temperature()
    assert sum(p.numel() for p in temp.parameters()) == 1
    assert temp(0).item() == pytest.approx(0.1, rel=1e-5)
    assert torch.equal(temp(0), temp(8))
    with torch.no_grad():
        temp.raw.fill_(50.0)
    assert 0.01 - 1e-6 <= temp(3).item() <= 1.0 + 1e-6
    with torch.no_grad():
        temp.raw.fill_(-50.0)
    assert 0.01 - 1e-6 <= temp(3).item() <= 1.0 + 1e-6
    released = Temperature(released=True)
    assert torch.equal(released.tau.detach(), torch.ones(9))
    with torch.no_grad():
        released.tau[4] = 7.0
    assert released(4).item() == 7.0 and released(5).item() == 1.0


@torch.no_grad()
def test_modality_contrastive_is_mean_of_six_terms_and_noise_of_three():
    torch.manual_seed(0)
    h = {m: torch.randn(5, 4) for m in ("audio", "video", "text")}
    proj = {m: nn.Linear(4, 8) for m in h}
    a, v, t = h["audio"], h["video"], h["text"]
    terms = [
        nt_xent(a, v, 0.2),
        nt_xent(a, t, 0.2),
        nt_xent(v, t, 0.2),
        nt_xent(proj["audio"](a), torch.cat([v, t], 1), 0.2),
        nt_xent(proj["video"](v), torch.cat([a, t], 1), 0.2),
        nt_xent(proj["text"](t), torch.cat([a, v], 1), 0.2),
    ]
    got = modality_contrastive(h, proj, nt_xent, 0.2)
    assert float(got) == pytest.approx(float(sum(terms)) / 6, rel=1e-6)
    noisy = {m: x + 0.1 for m, x in h.items()}
    expected = sum(float(nt_xent(h[m], noisy[m], 0.2)) for m in h) / 3
    assert float(noise_contrastive(h, noisy, nt_xent, 0.2)) == pytest.approx(expected, rel=1e-6)


# --- SemiNet --------------------------------------------------------------------------------


def test_pick_nhead_and_missing_modality_error():
    assert pick_nhead(8, 4) == 4
    assert pick_nhead(6, 4) == 3
    assert pick_nhead(5, 4) == 1
    assert pick_nhead(5120, 4) == 4
    with pytest.raises(ValueError, match="text"):
        SemiNet({"audio": 6, "video": 5}, N_CLASSES)


def test_forward_shape_and_vote_is_weighted_sum_of_heads():
    net = make_net().eval()
    inputs, _ = toy_data(7)
    with torch.no_grad():
        out = net(inputs)
        logits = net.heads(net.encode(inputs))
    assert out.shape == (7, N_CLASSES)
    assert set(logits) == {"audio", "video", "text", "fused"}
    manual = 0.7 * logits["audio"] + 0.4 * logits["video"] + 0.3 * logits["text"]
    manual = manual + 0.7 * logits["fused"]
    torch.testing.assert_close(out, manual)


def test_predictions_are_batch_independent_by_default_only():
    inputs, _ = toy_data(6)
    for as_seq, independent in ((False, True), (True, False)):
        net = make_net(batch_as_sequence=as_seq).eval()
        with torch.no_grad():
            batch = net(inputs)[2]
            alone = net({m: x[2:3] for m, x in inputs.items()})[0]
        assert torch.allclose(batch, alone, atol=1e-5) is independent


def test_training_loss_falls_and_beats_chance():
    net = make_net()
    inputs, y = toy_data(60)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, parts = net.training_loss(inputs, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"ce", "contrast", "heads_ce"}
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-5)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    with torch.no_grad():
        acc = float((net.eval()(inputs).argmax(1) == y).float().mean())
    assert acc > 0.7  # chance is 1/3


def test_released_contrast_option_trains_too():
    net = make_net(released_contrast=True)
    inputs, y = toy_data(12)
    loss, _ = net.training_loss(inputs, y)
    loss.backward()
    assert net.temperature.tau.grad is not None and net.temperature.tau.grad.shape == (9,)


def test_pretrain_loss_falls_and_follows_the_generator():
    net = make_net()
    inputs, _ = toy_data(48)

    def loss_with_seed(seed: int) -> float:
        torch.manual_seed(0)  # dropout
        return net.pretrain_loss(inputs, torch.Generator().manual_seed(seed))[0].item()

    assert loss_with_seed(1) == loss_with_seed(1)
    assert loss_with_seed(1) != loss_with_seed(2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss, parts = net.pretrain_loss(inputs, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"contrast", "noise_contrast"}
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])


def test_load_encoders_copies_only_pretrained_parts():
    src, dst = make_net(seed=1), make_net(seed=2)
    state = src.encoder_state()
    assert state and {k.split(".", 1)[0] for k in state} == set(PRETRAINED)
    cls_before = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("classifiers.")}
    dst.load_encoders(src.state_dict())  # a full state dict: classifier keys are ignored
    after = dst.state_dict()
    for k, v in state.items():
        torch.testing.assert_close(after[k], v)
    for k, v in cls_before.items():
        torch.testing.assert_close(after[k], v)
    assert any(not torch.equal(v, src.state_dict()[k]) for k, v in cls_before.items())
    broken = dict(state)
    broken.pop(next(k for k in broken if k.startswith("proj.")))
    with pytest.raises(RuntimeError):
        dst.load_encoders(broken)


def test_missing_modality_zero_rows_give_finite_outputs():
    net = make_net().eval()
    inputs, _ = toy_data(6)
    present = {
        "audio": torch.tensor([True, False, True, False, True, True]),
        "video": torch.zeros(6, dtype=torch.bool),
        "text": torch.ones(6, dtype=torch.bool),
    }
    assert not getattr(net, "handles_missing", False)
    with torch.no_grad():
        out = net(zero_missing(inputs, present))
    assert out.shape == (6, N_CLASSES) and torch.isfinite(out).all()


# --- pseudo-labels --------------------------------------------------------------------------


def test_select_confident_is_inclusive_per_class():
    probs = np.array(
        [
            [0.99, 0.005, 0.005],  # class 0 exactly at 0.99: kept
            [0.98, 0.01, 0.01],  # class 0 below 0.99: dropped
            [0.05, 0.9, 0.05],  # class 1 at 0.9 >= 0.85: kept
            [0.1, 0.1, 0.8],  # class 2 below 0.85: dropped
            [0.0, 0.0, 1.0],  # kept
        ]
    )
    rows, labels = select_confident(probs, np.array([0.99, 0.85, 0.85]))
    np.testing.assert_array_equal(rows, [0, 2, 4])
    np.testing.assert_array_equal(labels, [0, 1, 2])


def test_class_thresholds_maps_names_and_rejects_unknown():
    classes = ["neutral", "angry", "happy", "sad", "worried", "surprise"]
    th = class_thresholds(classes, {"worried": 0.85, "surprise": 0.85}, 0.99)
    np.testing.assert_array_equal(th, [0.99, 0.99, 0.99, 0.99, 0.85, 0.85])
    with pytest.raises(ValueError, match="worry"):
        class_thresholds(classes, {"worry": 0.85}, 0.99)


def test_adaptive_thresholds_lower_slow_classes_but_respect_floor():
    base = np.array([0.9, 0.9, 0.9])
    probs = np.array([[0.95, 0.03, 0.02]] * 8 + [[0.02, 0.95, 0.03]] * 2 + [[0.4, 0.3, 0.3]] * 2)
    # sigma = (8, 2, 0); n_unused = 2 -> beta = (1, 0.25, 0).
    th = adaptive_thresholds(probs, base, warmup=True)
    assert th[0] == pytest.approx(0.9)
    assert th[1] == pytest.approx(0.5)  # 0.25 / 1.75 * 0.9 = 0.129, floored at 0.5
    assert th[2] == pytest.approx(0.5)
    loose = adaptive_thresholds(probs, base, warmup=True, min_threshold=0.0)
    assert loose[1] == pytest.approx(0.25 / 1.75 * 0.9) and loose[2] == 0.0
    # Warmup: many unconfident rows make every class look unlearned.
    many_unused = np.vstack([probs, [[0.4, 0.3, 0.3]] * 14])  # n_unused = 16 > 8
    warm = adaptive_thresholds(many_unused, base, warmup=True, min_threshold=0.0)
    assert warm[0] == pytest.approx(0.5 / 1.5 * 0.9)
    assert adaptive_thresholds(many_unused, base, warmup=False)[0] == pytest.approx(0.9)
    # No confident row at all: beta = 0 everywhere, so only the floor remains (never 0).
    flat = np.full((5, 3), 1 / 3)
    np.testing.assert_allclose(adaptive_thresholds(flat, base), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(
        adaptive_thresholds(flat, np.array([0.4, 0.9, 0.9])), [0.4, 0.5, 0.5]
    )


def test_oversample_balances_exactly_keeps_rows_and_is_reproducible():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 4)
    idx = oversample(labels, np.random.default_rng(3))
    np.testing.assert_array_equal(np.bincount(labels[idx]), [7, 7, 7])
    assert set(range(labels.size)) <= set(idx.tolist())
    assert np.all(np.diff(idx) >= 0)
    np.testing.assert_array_equal(idx, oversample(labels, np.random.default_rng(3)))
    assert not np.array_equal(idx, oversample(labels, np.random.default_rng(4)))
