"""Per-time-step loss: cross-entropy with an optional MSE-to-one-hot term (OTTT/NDOT/BSO code: 0.05)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def spike_loss(out: torch.Tensor, y: torch.Tensor, loss_lambda: float = 0.0) -> torch.Tensor:
    """``(1 - lambda) * CE(out, y) + lambda * MSE(out, onehot(y))`` on one time step's outputs."""
    ce = F.cross_entropy(out, y)
    if loss_lambda == 0.0:
        return ce
    onehot = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return (1.0 - loss_lambda) * ce + loss_lambda * F.mse_loss(out, onehot)
