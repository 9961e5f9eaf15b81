"""NMER: encoder shapes, losses, the noise scheduler, option switches and a tiny learning run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustmer.models.nmer.network import (
    MODALITY_ORDER,
    NMER,
    ConditionVAE,
    FcClassifier,
    MaxPoolLSTM,
    NMERStage1,
    SharedEncoder,
    TextCNN,
    cmd_loss,
    kaiming_init,
    kl_divergence,
    modality_encoder,
)

DIMS = {"audio": 8, "text": 12, "video": 10}
FRAME_AV = {"audio": "frame", "text": "utterance", "video": "frame"}
ALL_FRAME = {"audio": "frame", "text": "frame", "video": "frame"}
N_CLASSES = 4


def make_inputs(
    batch: int, levels: dict[str, str], steps: int = 6, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        m: torch.randn((batch, steps, d) if levels[m] == "frame" else (batch, d), generator=g)
        for m, d in DIMS.items()
    }


def all_present(batch: int, value: bool = True) -> dict[str, torch.Tensor]:
    return {m: torch.full((batch,), value) for m in MODALITY_ORDER}


# --- encoders -------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [2, 9])
def test_textcnn_shapes_pad_short_sequences(steps: int) -> None:
    enc = TextCNN(12, out_dim=128)
    out = enc(torch.randn(3, steps, 12))
    assert out.shape == (3, 128)
    assert torch.all(out >= 0)  # final ReLU


def test_textcnn_short_sequence_equals_explicit_zero_padding() -> None:
    enc = TextCNN(12).eval()
    x = torch.randn(2, 2, 12)
    padded = torch.cat([x, torch.zeros(2, 3, 12)], dim=1)
    assert torch.allclose(enc(x), enc(padded))


def test_textcnn_conv1d_is_the_released_conv2d() -> None:
    """The kernels run as conv1d over [B, D, T]; the released Conv2d over [B, 1, T, D] gives the
    same features and the same weight gradients (up to summation order)."""
    torch.manual_seed(0)
    enc = TextCNN(24, out_dim=16, channels=8).eval()
    x = torch.randn(5, 11, 24)

    def released(e: TextCNN) -> torch.Tensor:
        pooled = [torch.relu(conv(x.unsqueeze(1))).squeeze(3).amax(dim=2) for conv in e.convs]
        return torch.relu(e.fc(e.dropout(torch.cat(pooled, dim=1))))

    ours, ref = enc(x), released(enc)
    assert torch.allclose(ours, ref, atol=1e-5)
    ours.square().sum().backward()
    grads = [c.weight.grad.clone() for c in enc.convs]
    enc.zero_grad()
    ref.square().sum().backward()
    for got, want in zip(grads, (c.weight.grad for c in enc.convs), strict=True):
        assert torch.allclose(got, want, atol=1e-4)


def test_maxpool_lstm_pools_over_padded_steps() -> None:
    torch.manual_seed(0)
    enc = MaxPoolLSTM(8, hidden=16)
    x = torch.randn(3, 4, 8)
    padded = torch.cat([x, torch.zeros(3, 5, 8)], dim=1)
    plain, with_pad = enc(x), enc(padded)
    assert plain.shape == with_pad.shape == (3, 16)
    # The max runs over every step, zero frames included: it can only grow, and it does.
    assert torch.all(with_pad >= plain - 1e-7)
    assert not torch.allclose(plain, with_pad)
    out, _ = enc.lstm(padded)
    assert torch.equal(with_pad, out.amax(dim=1))


def test_modality_encoder_choice_and_validation() -> None:
    assert isinstance(modality_encoder("audio", 8, "frame"), MaxPoolLSTM)
    assert isinstance(modality_encoder("video", 8, "frame"), MaxPoolLSTM)
    assert isinstance(modality_encoder("text", 8, "frame"), TextCNN)
    utt = modality_encoder("text", 8, "utterance", hidden=32)
    assert utt(torch.randn(5, 8)).shape == (5, 32)
    with pytest.raises(ValueError):
        utt(torch.randn(5, 3, 8))
    with pytest.raises(ValueError):
        modality_encoder("audio", 8, "segment")
    with pytest.raises(ValueError):
        modality_encoder("depth", 8, "frame")


def test_shared_encoder_and_classifier_layout() -> None:
    shared = SharedEncoder(128)
    assert shared(torch.randn(4, 128)).shape == (4, 128)
    clf = FcClassifier(384, [128, 128], 5, dropout=0.1, use_bn=True)
    kinds = [type(m) for m in clf.hidden]
    assert kinds == [nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout] * 2
    assert clf(torch.randn(4, 384)).shape == (4, 5)
    plain = FcClassifier(768, [128, 128], 3, dropout=0.2, use_bn=False)
    assert nn.BatchNorm1d not in [type(m) for m in plain.hidden]


@pytest.mark.parametrize("levels", [FRAME_AV, ALL_FRAME], ids=["utt_text", "frame_text"])
def test_stage1_and_nmer_logit_shapes(levels: dict[str, str]) -> None:
    torch.manual_seed(0)
    inputs = make_inputs(5, levels)
    stage1 = NMERStage1(DIMS, levels, N_CLASSES)
    assert stage1(inputs).shape == (5, N_CLASSES)
    spec, shared = stage1.encode(inputs)
    assert all(spec[m].shape == shared[m].shape == (5, 128) for m in MODALITY_ORDER)
    model = NMER(DIMS, levels, N_CLASSES)
    present = {"audio": torch.tensor([True, False, True, False, True])}
    present |= {"text": torch.ones(5, dtype=torch.bool), "video": torch.zeros(5, dtype=torch.bool)}
    assert model(inputs, None, present).shape == (5, N_CLASSES)
    parts = model.parts(inputs, present)
    assert parts["F_miss"].shape == parts["H_miss"].shape == parts["x_recon"].shape == (5, 384)
    assert parts["mu"].shape == parts["logvar"].shape == (5, 64)


def test_all_three_modalities_required() -> None:
    with pytest.raises(ValueError):
        NMERStage1({"audio": 8, "text": 12}, FRAME_AV, N_CLASSES)
    with pytest.raises(ValueError):
        NMER({**DIMS, "depth": 3}, FRAME_AV, N_CLASSES)


# --- losses ---------------------------------------------------------------------------------


def test_cmd_loss_zero_positive_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 16, generator=g)
    y = torch.randn(32, 16, generator=g) * 2.0 + 0.5
    assert float(cmd_loss(x, x.clone())) == pytest.approx(0.0, abs=1e-7)
    assert float(cmd_loss(x, x + 1.0)) > 0.5  # mean shift alone: ||1||_2 = 4
    assert float(cmd_loss(x, x + 1.0)) == pytest.approx(4.0, rel=1e-5)
    assert torch.allclose(cmd_loss(x, y), cmd_loss(y, x))


def test_kl_divergence_is_summed() -> None:
    mu = torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.1, -0.3]])
    logvar = torch.tensor([[0.0, 0.2, -1.0], [0.3, -0.5, 1.0]])
    per_elem = -0.5 * (1 + logvar - mu**2 - logvar.exp())
    assert torch.allclose(kl_divergence(mu, logvar), per_elem.mean() * per_elem.numel())
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3))) == 0.0


def test_loss_parts_finite_and_sum_to_total() -> None:
    torch.manual_seed(0)
    inputs = make_inputs(6, ALL_FRAME)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    stage1 = NMERStage1(DIMS, ALL_FRAME, N_CLASSES)
    total, parts = stage1.training_loss(inputs, None, y)
    assert set(parts) == {"ce", "cmd"}
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-5)

    model = NMER(DIMS, ALL_FRAME, N_CLASSES)
    present = all_present(6)
    present["video"] = torch.tensor([False, True, False, True, False, True])
    total, parts = model.training_loss(inputs, None, y, present, stage1)
    assert set(parts) == {"ce", "inv_mse", "recon_mse", "kl"}
    assert all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    assert total.item() == pytest.approx(sum(parts.values()), rel=1e-5)


def test_teacher_stays_frozen() -> None:
    torch.manual_seed(0)
    inputs = make_inputs(6, FRAME_AV)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    teacher = NMERStage1(DIMS, FRAME_AV, N_CLASSES)
    before = copy.deepcopy(teacher.state_dict())
    model = NMER(DIMS, FRAME_AV, N_CLASSES)
    model.load_stage1(teacher.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss, _ = model.training_loss(inputs, None, y, all_present(6, False), teacher)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training  # its mode is restored after the no-grad pass
    # The student did move, so the check above is not vacuous.
    assert not torch.equal(
        model.spec["audio"].lstm.weight_ih_l0, before["spec.audio.lstm.weight_ih_l0"]
    )


# --- noise scheduler ------------------------------------------------------------------------


def test_noise_only_on_missing_modalities() -> None:
    model = NMER(DIMS, ALL_FRAME, N_CLASSES)
    inputs = make_inputs(4, ALL_FRAME)
    present = all_present(4)
    present["audio"] = torch.zeros(4, dtype=torch.bool)
    noisy = model.noisy_inputs(inputs, present)
    assert not torch.equal(noisy["audio"], inputs["audio"])
    assert torch.all((noisy["audio"] - inputs["audio"]).abs().flatten(1).amax(1) > 0)
    assert torch.equal(noisy["text"], inputs["text"])
    assert torch.equal(noisy["video"], inputs["video"])

    clean = model.noisy_inputs(inputs, all_present(4))
    assert all(torch.equal(clean[m], inputs[m]) for m in MODALITY_ORDER)
    assert model.noisy_inputs(inputs, None) == inputs


def test_noise_only_on_missing_rows_and_follows_manual_seed() -> None:
    model = NMER(DIMS, FRAME_AV, N_CLASSES, noise_kind="impulse")
    inputs = make_inputs(4, FRAME_AV)
    present = all_present(4)
    present["text"] = torch.tensor([True, False, True, False])
    torch.manual_seed(3)
    first = model.noisy_inputs(inputs, present)
    torch.manual_seed(3)
    second = model.noisy_inputs(inputs, present)
    assert torch.equal(first["text"], second["text"])
    assert torch.equal(first["text"][[0, 2]], inputs["text"][[0, 2]])
    assert not torch.equal(first["text"][[1, 3]], inputs["text"][[1, 3]])


# --- options --------------------------------------------------------------------------------


def _sample0_logits(model: NMER, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    torch.manual_seed(123)
    with torch.no_grad():
        return model(batch)[0]


@pytest.mark.parametrize("attention", ["per_sample", "batch_as_sequence"])
def test_vae_attention_batch_dependence(attention: str) -> None:
    torch.manual_seed(0)
    model = NMER(DIMS, FRAME_AV, N_CLASSES, vae_attention=attention).eval()
    data = make_inputs(7, FRAME_AV)
    # Same batch size, same first sample, different companions.
    batch_a = {m: x[[0, 1, 2, 3]] for m, x in data.items()}
    batch_b = {m: x[[0, 4, 5, 6]] for m, x in data.items()}
    same = torch.allclose(
        _sample0_logits(model, batch_a), _sample0_logits(model, batch_b), atol=1e-5
    )
    assert same == (attention == "per_sample")


def test_condition_vae_rejects_unknown_attention() -> None:
    with pytest.raises(ValueError):
        ConditionVAE(attention="global")


def test_residual_adds_f_miss() -> None:
    torch.manual_seed(0)
    with_res = NMER(DIMS, FRAME_AV, N_CLASSES, residual=True).eval()
    without = NMER(DIMS, FRAME_AV, N_CLASSES, residual=False).eval()
    without.load_state_dict(with_res.state_dict())
    inputs = make_inputs(5, FRAME_AV)
    present = all_present(5)
    present["video"] = torch.tensor([False, True, False, True, True])
    with torch.no_grad():
        torch.manual_seed(7)
        a = with_res.parts(inputs, present)
        torch.manual_seed(7)
        b = without.parts(inputs, present)
    assert torch.equal(a["F_miss"], b["F_miss"])
    assert torch.allclose(a["x_recon"] - b["x_recon"], a["F_miss"], atol=1e-5)
    assert torch.all((b["x_recon"] > 0) & (b["x_recon"] < 1))  # sigmoid output alone


# --- init and weight transfer ---------------------------------------------------------------


def test_load_stage1_copies_encoders() -> None:
    torch.manual_seed(0)
    stage1 = NMERStage1(DIMS, ALL_FRAME, N_CLASSES)
    model = NMER(DIMS, ALL_FRAME, N_CLASSES)
    model.load_stage1(stage1.state_dict())
    src = stage1.state_dict()
    dst = model.state_dict()
    copied = [k for k in dst if k.split(".")[0] in ("spec", "inv", "shared")]
    assert copied and all(torch.equal(dst[k], src[k]) for k in copied)
    broken = {k: v for k, v in src.items() if not k.startswith("shared.")}
    with pytest.raises(RuntimeError):
        model.load_stage1(broken)


def test_kaiming_init_zeroes_biases() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, (3, 5)), nn.Linear(8, 6), TextCNN(5, 16))
    for p in net.parameters():
        nn.init.constant_(p, 1.0)
    kaiming_init(net)
    for mod in net.modules():
        if isinstance(mod, nn.Linear | nn.Conv2d):
            assert torch.count_nonzero(mod.bias) == 0
            assert mod.weight.std() > 0


@pytest.mark.parametrize("stage", [1, 2])
def test_sub_networks_cover_the_model_once(stage: int) -> None:
    """Both stages clip per sub-network (the released optimiser); every weight in one part."""
    model = NMERStage1(DIMS, FRAME_AV, N_CLASSES) if stage == 1 else NMER(DIMS, FRAME_AV, N_CLASSES)
    nets = model.sub_networks()
    expected = {f"{p}_{m}" for p in ("spec", "inv") for m in MODALITY_ORDER}
    heads = {"shared", "classifier"} | ({"vae"} if stage == 2 else set())
    assert set(nets) == expected | heads
    ids = [id(p) for net in nets.values() for p in net.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


# --- it learns ------------------------------------------------------------------------------

PATTERNS = torch.tensor(
    # audio, text, video: one or two modalities present
    [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=torch.bool,
)


def separable_data(n: int = 160, steps: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % N_CLASSES
    inputs = {}
    for m, d in DIMS.items():
        means = torch.randn(N_CLASSES, d, generator=g) * 1.5
        inputs[m] = means[y].unsqueeze(1) + torch.randn(n, steps, d, generator=g)
    return inputs, y


def random_present(n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    rows = PATTERNS[torch.randint(0, len(PATTERNS), (n,), generator=generator)]
    return {m: rows[:, i] for i, m in enumerate(MODALITY_ORDER)}


def test_two_stage_training_learns() -> None:
    torch.manual_seed(0)
    inputs, y = separable_data()

    stage1 = NMERStage1(DIMS, ALL_FRAME, N_CLASSES)
    opt = torch.optim.Adam(stage1.parameters(), lr=2e-3)
    for _ in range(30):
        opt.zero_grad()
        loss, _ = stage1.training_loss(inputs, None, y)
        loss.backward()
        opt.step()
    stage1.eval()
    with torch.no_grad():
        acc1 = float((stage1(inputs).argmax(1) == y).float().mean())
    assert acc1 > 0.6

    model = NMER(DIMS, ALL_FRAME, N_CLASSES)
    model.load_stage1(stage1.state_dict())
    for p in stage1.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        opt.zero_grad()
        loss, _ = model.training_loss(inputs, None, y, random_present(len(y), g), stage1)
        loss.backward()
        for net in model.sub_networks().values():
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
    model.eval()
    torch.manual_seed(2)
    with torch.no_grad():
        logits = model(inputs, None, random_present(len(y), g))
    acc2 = float((logits.argmax(1) == y).float().mean())
    assert acc2 > 0.5


def test_frame_pool_averages_windows_of_frames() -> None:
    dims = {"audio": 4, "text": 3, "video": 5}
    levels = {"audio": "frame", "text": "utterance", "video": "frame"}
    model = NMERStage1(dims, levels, 4, frame_pool={"audio": 10})
    x = torch.arange(25, dtype=torch.float32).repeat(4, 1).T.unsqueeze(0)  # [1, 25, 4]
    pooled = model._pooled("audio", x)
    assert pooled.shape == (1, 3, 4)
    assert pooled[0, :, 0].tolist() == [4.5, 14.5, 22.0]  # last window: 5 real frames
    assert model._pooled("video", x) is x
