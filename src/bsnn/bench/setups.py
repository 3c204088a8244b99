"""The training setups that benchmarks compare, all on the same conv net.

* ``tbso`` / ``bso``: online (one step at a time), exact ±1 binary hidden convs, BSO/T-BSO;
* ``sj_ottt``: SpikingJelly's own OTTT online training (``OTTTLIFNode`` + ``OTTTSequential``),
  full-precision weights, SGD — the reference online method without binary weights;
* ``bptt``: BPTT over all T with latent-weight binary convs (sign + STE) and SpikingJelly's multi-step
  LIF, SGD with momentum (a latent weight + a momentum buffer per binary weight).
"""
from __future__ import annotations

from dataclasses import dataclass
import torch
from spikingjelly.activation_based import layer, neuron, surrogate
from torch import nn

from ..models import create
from ..optim import BSO, TBSO
from ..train import BPTTMethod, OnlineMethod

__all__ = ["SETUPS", "Setup", "build_setup", "sj_ottt_convnet"]

SETUPS = ("tbso", "bso", "sj_ottt", "bptt")
LABELS = {"tbso": "online T-BSO", "bso": "online BSO", "sj_ottt": "SpikingJelly OTTT (FP)",
          "bptt": "BPTT latent-binary"}


def sj_ottt_convnet(in_channels: int, image_size: int, channels, num_classes: int = 10) -> nn.Module:
    """The ``convnet`` layout built from SpikingJelly's OTTT modules (full precision)."""
    mods: list[nn.Module] = []
    size = image_size
    for a, b in zip([in_channels, *channels[:-1]], channels):
        mods += [nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b),
                 neuron.OTTTLIFNode(tau=2.0, surrogate_function=surrogate.Sigmoid(alpha=4.0))]
        if size > 7:
            mods.append(nn.AvgPool2d(2))   # SpikingJelly's OTTT pools spikes with grad, traces without
            size //= 2
    mods += [nn.Flatten(1), nn.Linear(channels[-1] * size * size, num_classes)]
    return layer.OTTTSequential(*mods)


@dataclass
class Setup:
    """One benchmark setup: a model, its optimizer and the training method that drives them."""
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    method: OnlineMethod

    @property
    def label(self) -> str:
        """The setup's name as shown in benchmark tables."""
        return LABELS[self.name]

    def train_batch(self, x, y):
        """Train on one batch ``x``, ``y``; returns the method's ``(loss, logits summed over T)``."""
        return self.method.train_batch(self.model, x, y, self.optimizer)


def build_setup(name: str, T: int, device: torch.device, in_channels: int = 3, image_size: int = 32,
                channels=(64, 128, 256), num_classes: int = 10) -> Setup:
    """Build the setup ``name`` (one of ``SETUPS``) for ``T`` time steps on ``device``."""
    kw = dict(in_channels=in_channels, image_size=image_size, channels=tuple(channels), num_classes=num_classes)
    if name in ("tbso", "bso"):
        model = create("convnet", method="online", **kw).to(device)
        opt: torch.optim.Optimizer = (TBSO(model.parameters(), time_steps=T) if name == "tbso"
                                      else BSO(model.parameters()))
        return Setup(name, model, opt, OnlineMethod(T))
    if name == "sj_ottt":
        model = sj_ottt_convnet(**kw).to(device)
        return Setup(name, model, torch.optim.SGD(model.parameters(), lr=0.1), OnlineMethod(T))
    if name == "bptt":
        model = create("convnet", method="bptt", **kw).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return Setup(name, model, opt, BPTTMethod(T))
    raise ValueError(f"unknown setup {name!r}; known: {SETUPS}")
