"""One place that decides which neuron and weight layers a model gets for a training method.

* ``"online"``: single-step ``OnlineLIFNode``; binary layers hold ±1 (``BinaryConv2d``/``BinaryLinear``)
  and every layer that receives spikes is ``TraceRouted``.
* ``"bptt"``: SpikingJelly's multi-step LIF; binary layers are latent-weight (``LatentBinary*``).

``binary=False`` gives the full-precision network of the same shape (FP-SNN / OTTT baselines).
"""
from __future__ import annotations

from dataclasses import dataclass

from spikingjelly.activation_based import surrogate
from torch import nn

from ..nn import (
    BinaryConv2d,
    BinaryLinear,
    LatentBinaryConv2d,
    LatentBinaryLinear,
    OnlineLIFNode,
    TraceRouted,
    multistep_lif,
)
from ..nn.neuron import TRACES

__all__ = ["LayerKit", "METHODS"]

METHODS = ("online", "bptt")


@dataclass
class LayerKit:
    method: str = "online"
    binary: bool = True
    tau: float = 2.0
    v_threshold: float = 1.0
    surrogate_alpha: float = 4.0
    trace: str = "ottt"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {self.trace!r}")

    @property
    def step_mode(self) -> str:
        return "s" if self.method == "online" else "m"

    def neuron(self) -> nn.Module:
        sg = surrogate.Sigmoid(alpha=self.surrogate_alpha)
        if self.method == "online":
            return OnlineLIFNode(self.tau, self.v_threshold, sg, trace=self.trace)
        return multistep_lif(self.tau, self.v_threshold, sg)

    def spike_input(self, layer: nn.Module) -> nn.Module:
        """Wrap a layer that receives spikes (trace routing in online mode)."""
        return TraceRouted(layer) if self.method == "online" else layer

    def conv(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1) -> nn.Module:
        """A hidden (binary unless ``binary=False``) conv that receives spikes."""
        if not self.binary:
            layer = nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        elif self.method == "online":
            layer = BinaryConv2d(cin, cout, k, stride, padding)
        else:
            layer = LatentBinaryConv2d(cin, cout, k, stride, padding)
        return self.spike_input(layer)

    def linear(self, fin: int, fout: int) -> nn.Module:
        """A hidden (binary unless ``binary=False``) linear layer that receives spikes."""
        if not self.binary:
            layer = nn.Linear(fin, fout, bias=False)
        elif self.method == "online":
            layer = BinaryLinear(fin, fout)
        else:
            layer = LatentBinaryLinear(fin, fout)
        return self.spike_input(layer)
