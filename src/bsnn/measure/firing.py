"""Firing rates of spiking layers: forward hooks on SpikingJelly memory modules (our neurons included).

Not SpikingJelly's ``monitor.OutputMonitor``: it appends every output (or a function of it) to a list, so
its memory grows with steps and batches; this meter keeps one running spike sum per layer on the device.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from spikingjelly.activation_based import base
from torch import nn

__all__ = ["FiringRateMeter", "is_neuron"]


def is_neuron(m: nn.Module) -> bool:
    """A spiking layer: a SpikingJelly memory module with a threshold (not BatchNorm's or AGMM's state)."""
    return isinstance(m, base.MemoryModule) and hasattr(m, "v_threshold")


class FiringRateMeter:
    """Counts spikes per neuron layer (``is_neuron``) while active; ``rates()`` = spikes / (neurons x steps x samples).

    Use on evaluation passes: in online training mode a neuron's output also carries its trace."""

    def __init__(self, model: nn.Module):
        self.layers = [(n, m) for n, m in model.named_modules() if is_neuron(m)]
        self.reset()

    def reset(self) -> None:
        self.spikes: dict[str, torch.Tensor | float] = {n: 0.0 for n, _ in self.layers}
        self.elements = {n: 0 for n, _ in self.layers}

    @contextmanager
    def record(self):
        """Context manager: count every neuron layer's spikes and outputs while the block runs."""
        def hook(name):
            def fn(mod, inp, out):
                if isinstance(out, torch.Tensor):
                    self.spikes[name] = self.spikes[name] + out.detach().sum()   # stays on device
                    self.elements[name] += out.numel()
            return fn
        handles = [m.register_forward_hook(hook(n)) for n, m in self.layers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def rates(self, prefix: str = "fire/") -> dict[str, float]:
        """Spikes per output element of each layer that fired at all, keyed ``prefix + layer name``."""
        return {f"{prefix}{n}": float(self.spikes[n]) / self.elements[n] for n in self.spikes if self.elements[n]}
