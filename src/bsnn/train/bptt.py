"""BPTT training of one batch: one multi-step forward over [T, B, ...], one backward over all T."""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional

from .losses import spike_loss
from .online import OnlineMethod, optimizer_step

__all__ = ["BPTTMethod", "sequence"]


def sequence(x: torch.Tensor, T: int, temporal: bool) -> torch.Tensor:
    """[T, B, ...] input: the static sample repeated (direct coding) or the [B, T, ...] frames transposed."""
    return x.transpose(0, 1) if temporal else x.unsqueeze(0).expand(T, *x.shape)


class BPTTMethod(OnlineMethod):
    """``loss="per_step"``: mean over t of the per-step loss (TET-style; the same objective as online
    training's sum of loss/T). ``loss="mean_output"``: the loss of the mean output over t."""

    name = "bptt"
    step_mode = "m"

    def __init__(self, time_steps: int, loss_lambda: float = 0.0, temporal: bool = False,
                 amp_dtype: torch.dtype | None = None, loss: str = "per_step", **_ignored):
        super().__init__(time_steps, "accumulated", loss_lambda, temporal, amp_dtype)
        if loss not in ("per_step", "mean_output"):
            raise ValueError(f"loss must be 'per_step' or 'mean_output', got {loss!r}")
        self.loss = loss

    def _forward(self, model, x):
        functional.reset_net(model)
        with self._autocast(x):
            return model(sequence(x, self.T, self.temporal)).float()

    def train_batch(self, model, x, y, optimizer, scaler=None):
        optimizer.zero_grad(set_to_none=True)
        out = self._forward(model, x)
        if self.loss == "mean_output":
            loss = spike_loss(out.mean(0), y, self.loss_lambda)
        else:
            loss = sum(spike_loss(out[t], y, self.loss_lambda) for t in range(out.shape[0])) / out.shape[0]
        (scaler.scale(loss) if scaler is not None else loss).backward()
        optimizer_step(optimizer, 0, scaler)
        return loss.detach(), out.detach().sum(0)

    @torch.no_grad()
    def predict(self, model, x):
        return self._forward(model, x).sum(0)
