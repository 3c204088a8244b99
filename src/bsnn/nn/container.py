"""Step modes, SpikingJelly's protocol: a ``base.StepModule`` handles ``[T, B, ...]`` itself in mode ``"m"``.

``SpikingSequential`` is a ``StepModule``: in multi-step mode every child that is not a ``StepModule``
(conv, BN, pooling, ...) sees time folded into the batch, and ``StepModule`` children (neurons, blocks,
SpikingJelly layers and containers) get the whole sequence. This is SpikingJelly's
``SeqToANNContainer`` idea applied per child, so one model definition serves online and BPTT training.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import base
from torch import nn

__all__ = ["SpikingSequential", "set_step_mode", "fold"]


def fold(m: nn.Module, x: torch.Tensor, step_mode: str) -> torch.Tensor:
    """Apply a module: as is in single-step mode or when it is a ``StepModule`` (it handles time itself);
    otherwise with [T, B] folded into the batch in multi-step mode."""
    if step_mode == "s" or isinstance(m, base.StepModule):
        return m(x)
    if type(m) is nn.Sequential and any(isinstance(c, base.StepModule) for c in m.modules()):
        for child in m:                           # a StepModule inside (e.g. StepBatchNorm) needs [T, B]
            x = fold(child, x, step_mode)
        return x
    return m(x.flatten(0, 1)).unflatten(0, x.shape[:2])


class SpikingSequential(nn.Sequential, base.StepModule):
    """``nn.Sequential`` that is a SpikingJelly ``StepModule``: in multi-step mode each child gets
    [T, B] folded into the batch or the whole sequence (``fold``)."""
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
    """Set ``step_mode`` on every ``StepModule`` of ``model`` that supports it (as SpikingJelly's
    ``functional.set_step_mode``, but leaving single-step-only neurons such as ``OnlineLIFNode`` alone)."""
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode must be 's' or 'm', got {step_mode!r}")
    for m in model.modules():
        if isinstance(m, base.StepModule) and step_mode in m.supported_step_mode():
            m.step_mode = step_mode
    return model
