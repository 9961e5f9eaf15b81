"""Model shapes, the MER2024 attention arithmetic, LSTM padding and the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustmer.config import ModelSpec
from robustmer.errors import ConfigError
from robustmer.models.early_fusion.network import EarlyFusionMLP
from robustmer.models.encoders import LSTMEncoder, MLPEncoder, fusion_order
from robustmer.models.mer2024_attention.network import MER2024Attention
from robustmer.models.registry import build_model, method, method_names

DIMS = {"video": 5, "audio": 7, "text": 3}


def spec(arch: str, **kw: object) -> ModelSpec:
    base = {"hidden_dim": 8, "dropout": 0.2, "num_layers": 3}
    return ModelSpec(name="m", arch=arch, features={m: "x" for m in DIMS}, **(base | kw))


def test_mlp_encoder_is_dropout_then_linear_relu_blocks() -> None:
    enc = MLPEncoder(10, 16, num_layers=3, dropout=0.4)
    kinds = [type(m) for m in enc.net]
    assert kinds == [nn.Dropout] + [nn.Linear, nn.ReLU] * 3
    assert enc.net[0].p == 0.4
    assert enc(torch.randn(4, 10)).shape == (4, 16)


def test_fusion_order_is_audio_text_video() -> None:
    assert fusion_order(DIMS) == ["audio", "text", "video"]
    assert fusion_order(["video", "text"]) == ["text", "video"]


def test_early_fusion_shapes() -> None:
    model = EarlyFusionMLP(DIMS, n_classes=4, hidden_dim=8)
    x = {m: torch.randn(6, d) for m, d in DIMS.items()}
    assert model(x).shape == (6, 4)
    assert model.encoder.net[1].in_features == sum(DIMS.values())


def test_attention_weights_are_raw_and_fuse_by_matmul() -> None:
    torch.manual_seed(0)
    model = MER2024Attention(DIMS, n_classes=6, hidden_dim=8).eval()
    x = {m: torch.randn(16, d) * 3 for m, d in DIMS.items()}
    hidden = model.encode(x)
    w = model.modality_weights(hidden)
    assert w.shape == (16, 3, 1)
    # Not softmaxed: weights are not a probability distribution over modalities.
    assert not torch.allclose(w.sum(dim=1), torch.ones(16, 1))
    assert (w < 0).any()
    # fused = stack([a, t, v], dim=2) @ w, then the class head.
    a, t, v = hidden
    fused = torch.stack([a, t, v], dim=2) @ w
    assert torch.allclose(model(x), model.head(fused.squeeze(2)), atol=1e-6)
    assert model(x).shape == (16, 6)
    assert model.attention_mlp.net[1].in_features == 3 * 8
    assert model.attention_out.out_features == 3


def test_attention_uses_lstm_for_frame_features() -> None:
    model = MER2024Attention(DIMS, 4, hidden_dim=8, levels={"video": "frame"})
    assert isinstance(model.encoders["video"], LSTMEncoder)
    assert isinstance(model.encoders["audio"], MLPEncoder)
    x = {"audio": torch.randn(3, 7), "text": torch.randn(3, 3), "video": torch.randn(3, 9, 5)}
    out = model(x, {"video": torch.tensor([9, 4, 1])})
    assert out.shape == (3, 4)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_lstm_padding_gives_the_same_output_as_each_sequence_alone(pooling: str) -> None:
    torch.manual_seed(1)
    enc = LSTMEncoder(4, 6, dropout=0.5, pooling=pooling).eval()
    seqs = [torch.randn(n, 4) for n in (2, 7, 4)]
    padded = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    padded[0, 2:] = 99.0  # garbage in the padding must not matter
    batch = enc(padded, torch.tensor([2, 7, 4]))
    for i, s in enumerate(seqs):
        alone = enc(s.unsqueeze(0), torch.tensor([len(s)]))
        torch.testing.assert_close(batch[i], alone[0], atol=1e-6, rtol=1e-5)


def test_lstm_handles_empty_sequences() -> None:
    enc = LSTMEncoder(4, 6, dropout=0.0).eval()
    out = enc(torch.zeros(2, 3, 4), torch.tensor([0, 3]))
    assert out.shape == (2, 6) and torch.isfinite(out).all()


def test_registry_builds_both_baselines() -> None:
    assert {"early_fusion", "mer2024_attention"} <= set(method_names())
    assert not method("early_fusion").frame_inputs
    assert method("mer2024_attention").frame_inputs
    assert isinstance(build_model(spec("early_fusion"), DIMS, 4), EarlyFusionMLP)
    model = build_model(spec("mer2024_attention", hidden_dim=5), DIMS, 4, {"audio": "frame"})
    assert isinstance(model, MER2024Attention)
    assert isinstance(model.encoders["audio"], LSTMEncoder)
    assert model.head.in_features == 5


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model architecture 'nope'"):
        build_model(spec("nope"), DIMS, 4)
    with pytest.raises(ConfigError, match="no input dims"):
        build_model(spec("early_fusion"), {"audio": 7}, 4)


def test_lstm_max_frames_pools_long_sequences_before_the_recurrence() -> None:
    from robustmer.models.sequence import pool_frames

    torch.manual_seed(0)
    plain = LSTMEncoder(6, 8, dropout=0.0)
    pooled = LSTMEncoder(6, 8, dropout=0.0, max_frames=5)
    pooled.load_state_dict(plain.state_dict())
    x = torch.randn(3, 40, 6)
    lengths = torch.tensor([40, 23, 4])
    x[1, 23:] = 0.0
    x[2, 4:] = 0.0
    fewer, new_lengths = pool_frames(x, lengths, 5)
    assert new_lengths.tolist() == [5, 5, 4]  # ceil(23 / 5) = 5 frames per group: 5 groups
    assert torch.allclose(pooled(x, lengths), plain(fewer, new_lengths), atol=1e-6)
    short = torch.randn(2, 5, 6)  # no longer than the cap: read as it is
    assert torch.allclose(pooled(short), plain(short))


def test_attention_max_frames_option_reaches_its_lstms() -> None:
    model = build_model(spec("mer2024_attention", options={"max_frames": 20}), DIMS, 4,
                        {"audio": "frame"})  # fmt: skip
    assert model.encoders["audio"].max_frames == 20
    with pytest.raises(ConfigError, match=r"options\.max_frames"):
        build_model(spec("mer2024_attention", options={"max_frames": -1}), DIMS, 4)
