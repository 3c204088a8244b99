"""Gradient statistics of binary (or latent-binary) weights, per layer, averaged over an epoch's steps.

AGMM's argument is that sign flips are driven by the mean and variance of the weight gradient; the
trainer logs both (``grad_mean/<layer>``, ``grad_var/<layer>``). An optimizer step *pre*-hook reads the
gradient the optimizer is about to use; values stay on the device until ``epoch_end``.
"""
from __future__ import annotations

import torch
from torch import nn

from .flips import binary_named_parameters

__all__ = ["GradientMonitor"]


class GradientMonitor:
    """Mean and variance of each binary weight's gradient at every ``optimizer.step``, averaged over the
    epoch's steps by ``epoch_end``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.params = binary_named_parameters(model)
        self._handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.before_step())
        self._reset()

    def _reset(self) -> None:
        self.steps = 0
        self.sums = [torch.zeros(2, dtype=torch.float64, device=p.device) for _, p in self.params]

    @torch.no_grad()
    def before_step(self) -> None:
        """Add each gradient's mean and variance (called by the optimizer's step pre-hook)."""
        self.steps += 1
        for s, (_, p) in zip(self.sums, self.params):
            if p.grad is not None:
                g = p.grad.detach().float()
                var, mean = torch.var_mean(g, correction=0)
                s += torch.stack([mean, var]).to(s.dtype)

    def epoch_end(self) -> dict[str, float]:
        """Per-layer ``grad_mean/<layer>`` and ``grad_var/<layer>`` averaged over the steps since the last
        call; starts the next epoch."""
        out: dict[str, float] = {}
        for (name, _), s in zip(self.params, self.sums):
            mean, var = (s / max(self.steps, 1)).tolist()
            out[f"grad_mean/{name}"] = mean
            out[f"grad_var/{name}"] = var
        self._reset()
        return out

    def remove(self) -> None:
        """Detach the hook from the optimizer."""
        self._handle.remove()
