"""Sign-flip rates of binary weights (exact ±1 or latent), counted on the device without syncs.

``FlipMonitor`` hooks the optimizer's ``step``: after every step it compares each binary tensor's signs
with those after the previous step and adds the number that changed. ``epoch_end`` reports per layer

* ``flip_step``: mean fraction of the layer's weights flipped per optimizer step;
* ``flip_epoch``: fraction whose sign differs between the start and the end of the epoch (net change).

State: one bool per binary weight for the previous step and one for the epoch start. Latent weights
count as +1 where ``w >= 0`` (the binarizers' convention).
"""
from __future__ import annotations

import torch
from torch import nn

from ..nn.binary import BinaryParameter

__all__ = ["FlipMonitor", "binary_named_parameters"]


def binary_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The model's ``BinaryParameter`` weights (exact ±1 or latent), named by their layer
    (``.weight`` and ``.layer`` suffixes removed)."""
    return [(n.removesuffix(".weight").removesuffix(".layer"), p)
            for n, p in model.named_parameters() if isinstance(p, BinaryParameter)]


class FlipMonitor:
    """Counts sign flips of the model's binary weights after every ``optimizer.step``; ``epoch_end`` reports
    per layer the mean fraction flipped per step (``flip_step/``) and the net fraction over the epoch
    (``flip_epoch/``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.params = binary_named_parameters(model)
        self._handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.after_step())
        self.start_epoch()

    @staticmethod
    def _signs(p: torch.Tensor) -> torch.Tensor:
        return p.detach() >= 0

    def start_epoch(self) -> None:
        """Take the current signs as the epoch start and reset the flip counts."""
        self.steps = 0
        self.epoch_start = [self._signs(p) for _, p in self.params]
        self.previous = [s.clone() for s in self.epoch_start]
        self.counts = [torch.zeros((), dtype=torch.int64, device=p.device) for _, p in self.params]

    @torch.no_grad()
    def after_step(self) -> None:
        """Add the signs changed since the previous step (called by the optimizer's step post-hook)."""
        self.steps += 1
        for i, (_, p) in enumerate(self.params):
            cur = self._signs(p)
            self.counts[i] += (cur != self.previous[i]).sum()
            self.previous[i] = cur

    def epoch_end(self) -> dict[str, float]:
        """Per-layer rates for the epoch just finished; starts the next epoch."""
        out: dict[str, float] = {}
        for (name, p), start, count in zip(self.params, self.epoch_start, self.counts):
            n = p.numel()
            out[f"flip_step/{name}"] = count.item() / (n * max(self.steps, 1))
            out[f"flip_epoch/{name}"] = (self._signs(p) != start).sum().item() / n
        self.start_epoch()
        return out

    def remove(self) -> None:
        """Detach the hook from the optimizer."""
        self._handle.remove()
