"""A Sequential that runs in single-step ([B, ...]) or multi-step ([T, B, ...]) mode.

In multi-step mode stateless modules (conv, BN, pooling, ...) see time folded into the batch, and
SpikingJelly memory modules (neurons) get the whole sequence. This is SpikingJelly's
``SeqToANNContainer`` idea applied per child, so one model definition serves online and BPTT training.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import base
from torch import nn

__all__ = ["SpikingSequential", "set_step_mode", "fold"]


def fold(m: nn.Module, x: torch.Tensor, step_mode: str) -> torch.Tensor:
    """Apply a module: as is in single-step mode or when it handles time itself (neurons, containers);
    otherwise with [T, B] folded into the batch in multi-step mode."""
    if step_mode == "s" or _is_temporal(m):
        return m(x)
    return m(x.flatten(0, 1)).unflatten(0, x.shape[:2])


def _is_temporal(m: nn.Module) -> bool:
    return isinstance(m, (base.MemoryModule, SpikingSequential)) or getattr(m, "temporal", False)


class SpikingSequential(nn.Sequential):
    def __init__(self, *modules: nn.Module, step_mode: str = "s"):
        super().__init__(*modules)
        self.step_mode = step_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "s":
            return super().forward(x)
        for m in self:
            x = fold(m, x, "m")
        return x

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}"


def set_step_mode(model: nn.Module, step_mode: str) -> nn.Module:
    """Set ``step_mode`` on every container and neuron of ``model`` (as SpikingJelly's ``set_step_mode``)."""
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
    for m in model.modules():
        if isinstance(m, SpikingSequential) or getattr(m, "temporal", False) or (
            isinstance(m, base.MemoryModule) and step_mode in m.supported_step_mode()
        ):
            m.step_mode = step_mode
    return model
