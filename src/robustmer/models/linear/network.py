"""The linear model and its exact fit: one affine map on the concatenated modality vectors."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from robustmer.models.encoders import fusion_order


class LinearModel(nn.Module):
    """Concatenate the modality vectors (audio, text, video order) -> Linear(n_outputs)."""

    def __init__(self, input_dims: Mapping[str, int], n_outputs: int):
        super().__init__()
        self.modalities = fusion_order(input_dims)
        self.head = nn.Linear(sum(input_dims[m] for m in self.modalities), n_outputs)

    def forward(
        self,
        inputs: Mapping[str, torch.Tensor],
        lengths: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return self.head(self.features(inputs))

    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([inputs[m] for m in self.modalities], dim=1)


def fit_linear(
    model: LinearModel,
    x: torch.Tensor,
    y: torch.Tensor,
    task: str,
    C: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
) -> dict[str, float]:
    """Minimise scikit-learn's objective `C * sum_i loss_i + ||W||^2 / 2` (intercept free).

    loss_i is the multinomial cross-entropy, or half the squared error for regression (ridge
    with alpha = 1/C). Solved in float64 from zero weights with full-batch L-BFGS (strong Wolfe
    line search), the objective divided by `C * n` so the tolerance does not depend on the
    data size; the weights are written back in the model's dtype. Deterministic: no random
    draw anywhere. Returns the final objective, the gradient's max-norm and the iterations.
    """
    n = x.shape[0]
    x64 = x.detach().to(torch.float64)
    weight = torch.zeros(model.head.out_features, x64.shape[1], dtype=torch.float64,
                         device=x.device, requires_grad=True)  # fmt: skip
    bias = torch.zeros(model.head.out_features, dtype=torch.float64, device=x.device,
                       requires_grad=True)  # fmt: skip
    if task == "regression":
        target = y.detach().to(torch.float64).view(-1)

        def data_loss(out: torch.Tensor) -> torch.Tensor:
            return 0.5 * ((out[:, 0] - target) ** 2).sum()
    else:
        target = y.detach().long()

        def data_loss(out: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(out, target, reduction="sum")

    scale = 1.0 / (C * n)
    optimiser = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
        history_size=20, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        value = (C * data_loss(x64 @ weight.T + bias) + 0.5 * (weight**2).sum()) * scale
        value.backward()
        return value

    optimiser.step(objective)
    final = objective().detach()
    grad = max(float(weight.grad.abs().max()), float(bias.grad.abs().max()))  # type: ignore[union-attr]
    state = optimiser.state[optimiser._params[0]]
    with torch.no_grad():
        model.head.weight.copy_(weight.to(model.head.weight.dtype))
        model.head.bias.copy_(bias.to(model.head.bias.dtype))
    return {"objective": float(final) / scale, "grad_max": grad, "iterations": int(state["n_iter"])}
