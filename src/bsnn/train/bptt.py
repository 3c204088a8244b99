"""BPTT training of one batch: one multi-step forward over [T, B, ...], one backward over all T."""
from __future__ import annotations

import torch
from spikingjelly.activation_based import functional

from .losses import logits
from .method import Method, optimizer_step, sequence

__all__ = ["BPTTMethod", "LOSSES"]

LOSSES = ("per_step", "mean_output")


class BPTTMethod(Method):
    """``loss="per_step"``: mean over t of the per-step loss (TET-style; the same objective as online
    training's sum of loss/T). ``loss="mean_output"``: the loss of the mean output over t."""

    name = "bptt"
    step_mode = "m"

    def __init__(self, time_steps: int, loss: str = "per_step", *, temporal: bool = False, criterion=None,
                 teacher=None, amp_dtype: torch.dtype | None = None, loss_lambda: float | None = None):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        super().__init__(time_steps, temporal=temporal, criterion=criterion, teacher=teacher, amp_dtype=amp_dtype,
                         loss_lambda=loss_lambda)
        self.loss = loss

    def _forward(self, model, x):
        functional.reset_net(model)
        with self._autocast(x):
            out = model(sequence(x, self.T, self.temporal))
        return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()

    def train_batch(self, model, x, y, optimizer, scaler=None):
        """One multi-step forward over ``[T, B, ...]``, the loss, one backward and one optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        out = self._forward(model, x)
        pred = logits(out)
        teacher = pred.detach().mean(0) if self.criterion.needs_ensemble else self._teacher_logits(x)
        pick = (lambda t: tuple(o[t] for o in out)) if isinstance(out, tuple) else (lambda t: out[t])
        if self.loss == "mean_output":
            mean = tuple(o.mean(0) for o in out) if isinstance(out, tuple) else out.mean(0)
            loss = self.criterion(mean, y, teacher)
        else:
            loss = sum(self.criterion(pick(t), y, teacher) for t in range(pred.shape[0])) / pred.shape[0]
        (scaler.scale(loss) if scaler is not None else loss).backward()
        optimizer_step(optimizer, 0, scaler)
        return loss.detach(), pred.detach().sum(0)

    @torch.no_grad()
    def step_logits(self, model, x):
        """``[T, B, classes]`` from one multi-step forward."""
        return logits(self._forward(model, x))
