"""SEI-BWSNN spiking ResNets: pre-activation binary units with a real-valued shortcut around every one.

SEI-BWSNN (Meng et al., arXiv 2508.12609) trains a binary-weight SNN as a self-ensemble of binary
networks and borrows binary-network tools, among them "multiple shortcuts". The paper's block is not
public; this is the reconstruction documented in ``docs/methods.md``:

* a **unit** is ``BN → LIF → binary 3x3 conv`` (pre-activation order of the authors' spiking ResNets),
  so every binary conv receives spikes in {0, 1} and the residual stream stays real-valued (membrane
  domain);
* a **block** is two units; ``shortcut`` chooses the additions:
  ``"per_layer"`` (default, Bi-Real Net style): ``h = u1(x) + down(x)``, ``out = u2(h) + h``;
  ``"block"`` (pre-activation ResNet): ``out = u2(u1(x)) + down(x)``; ``"none"``: ``out = u2(u1(x))``;
* ``down`` is the identity, or where the shape changes ``AvgPool2d(2) → full-precision 1x1 conv → BN``
  (Bi-Real Net / ReActNet);
* stem: a full-precision conv (``"cifar"``: 3x3 stride 1; ``"imagenet"``: 7x7 stride 2 + 3x3/2 max
  pool; ``"small"``: 3x3 stride 2, for MNIST-sized inputs on a CPU budget); head: ``BN → LIF → global average pool → full-precision Linear`` (``head_kd`` adds a
  distillation head: training returns ``(out, out_kd)``, evaluation their mean, as in DeiT).
"""
from __future__ import annotations

from typing import Sequence

import torch
from spikingjelly.activation_based import base
from torch import nn

from ..nn import AvgPool2d, fold
from ..nn.init import real_convs_
from .layers import LayerKit
from .registry import register_model

__all__ = ["SEIBlock", "SEIResNet", "SHORTCUTS", "sei_resnet18", "sei_resnet34", "sei_resnet_tiny"]

SHORTCUTS = ("per_layer", "block", "none")
STEMS = ("cifar", "imagenet", "small")


def _downsample(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    # ceil_mode: odd maps (N-MNIST's 34 -> 17) pool to the size of the stride-2 conv's output
    return nn.Sequential(AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride != 1 else nn.Identity(),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class SEIBlock(nn.Module, base.StepModule):
    """Two pre-activation binary units (``BN → LIF → binary conv``) with the chosen shortcuts."""

    def __init__(self, kit: LayerKit, cin: int, cout: int, stride: int = 1, shortcut: str = "per_layer"):
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.step_mode = kit.step_mode
        self.shortcut = shortcut
        self.bn1, self.lif1, self.conv1 = kit.norm(cin), kit.neuron(), kit.conv(cin, cout, 3, stride, 1)
        self.bn2, self.lif2, self.conv2 = kit.norm(cout), kit.neuron(), kit.conv(cout, cout, 3, 1, 1)
        self.downsample = _downsample(cin, cout, stride) if shortcut != "none" else None

    def _unit(self, bn: nn.Module, lif: nn.Module, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return fold(conv, lif(fold(bn, x, self.step_mode)), self.step_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._unit(self.bn1, self.lif1, self.conv1, x)
        if self.shortcut == "per_layer":
            h = h + fold(self.downsample, x, self.step_mode)
        out = self._unit(self.bn2, self.lif2, self.conv2, h)
        if self.shortcut == "per_layer":
            return out + h
        if self.shortcut == "block":
            return out + fold(self.downsample, x, self.step_mode)
        return out

    def extra_repr(self) -> str:
        return f"shortcut={self.shortcut}, step_mode={self.step_mode}"


class SEIResNet(nn.Module, base.StepModule):
    """SEI ResNet: full-precision ``stem``, ``blocks[i]`` :class:`SEIBlock` of width ``widths[i]`` per stage
    (stride 2 at the start of every stage after the first), then ``BN → LIF → global average pool → Linear``
    (plus the distillation head with ``head_kd``)."""

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_channels: int = 3, stem: str = "cifar", shortcut: str = "per_layer",
                 head_kd: bool = False, kit: LayerKit | None = None):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
            raise ValueError(f"blocks and widths need one positive entry per stage, got {blocks}, {widths}")
        kit = kit or LayerKit()
        self.step_mode = kit.step_mode
        w0 = widths[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Conv2d(in_channels, w0, 3, 2 if stem == "small" else 1, 1, bias=False)
        layers, cin = [], w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(SEIBlock(kit, cin, w, 2 if (i > 0 and j == 0) else 1, shortcut))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.bn, self.lif = nn.BatchNorm2d(cin), kit.neuron()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.head = kit.spike_input(nn.Linear(cin, num_classes))
        self.head_kd = kit.spike_input(nn.Linear(cin, num_classes)) if head_kd else None
        real_convs_(self)

    def forward(self, x: torch.Tensor):
        sm = self.step_mode
        x = self.layers(fold(self.stem, x, sm))
        x = fold(self.pool, self.lif(fold(self.bn, x, sm)), sm)
        out = fold(self.head, x, sm)
        if self.head_kd is None:
            return out
        kd = fold(self.head_kd, x, sm)
        return (out, kd) if self.training else (out + kd) / 2


def _sei_resnet(blocks, widths, num_classes, in_channels, stem, shortcut, head_kd, method, kit):
    return SEIResNet(blocks, widths, num_classes, in_channels, stem, shortcut, head_kd, LayerKit(method, **kit))


@register_model("sei_resnet18")
def sei_resnet18(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", shortcut: str = "per_layer",
                 head_kd: bool = False, method: str = "bptt", **kit) -> SEIResNet:
    """SEI ResNet-18: [2, 2, 2, 2] blocks of two binary units at 64-128-256-512 channels (16 binary convs)."""
    return _sei_resnet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, stem, shortcut, head_kd,
                       method, kit)


@register_model("sei_resnet34")
def sei_resnet34(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar", shortcut: str = "per_layer",
                 head_kd: bool = False, method: str = "bptt", **kit) -> SEIResNet:
    """SEI ResNet-34: [3, 4, 6, 3] blocks (32 binary convs)."""
    return _sei_resnet((3, 4, 6, 3), (64, 128, 256, 512), num_classes, in_channels, stem, shortcut, head_kd,
                       method, kit)


@register_model("sei_resnet_tiny")
def sei_resnet_tiny(num_classes: int = 10, in_channels: int = 3, stem: str = "cifar",
                    shortcut: str = "per_layer", head_kd: bool = False, widths: Sequence[int] = (32, 64, 128),
                    method: str = "bptt", **kit) -> SEIResNet:
    """CPU-sized SEI ResNet: one block per stage (default 32-64-128 channels, 6 binary convs)."""
    return _sei_resnet((1,) * len(widths), tuple(widths), num_classes, in_channels, stem, shortcut, head_kd,
                       method, kit)
