"""Bi-Real-style spiking ResNets (as in the BSO paper, Liang et al., ICML 2025): one binary conv per block, real-valued residual stream.

Block: ``LIF(x) -> binary 3x3 conv -> BN``, added to the shortcut; spikes exist only at each block's
conv input. Where the shape changes the shortcut is ``AvgPool2d(2) -> full-precision 1x1 conv -> BN``
on the real-valued block input. Head: global average pool of the real stream -> full-precision FC.

Stems: ``"bso"`` (the BSO code: 3x3 stride-1 conv, BN, 3x3/2 max pool — layer1 runs at 112x112 on
224 inputs), ``"imagenet"`` (7x7 stride-2 conv, BN, max pool, as Bi-Real Net / torchvision), ``"cifar"``
(3x3 stride-1 conv, BN, no pool).
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

__all__ = ["BiRealBlock", "SpikingBiRealResNet", "SpikingBasicBlock", "SpikingResNet", "resnet18", "resnet34",
           "resnet19", "spiking_resnet18", "STEMS"]

STEMS = ("bso", "imagenet", "cifar")


class BiRealBlock(nn.Module, base.StepModule):
    """Handles [T, B, ...] itself in multi-step mode (SpikingJelly's step-mode protocol)."""

    def __init__(self, kit: LayerKit, cin: int, cout: int, stride: int):
        super().__init__()
        self.step_mode = kit.step_mode
        self.neuron = kit.neuron()
        self.conv = kit.conv(cin, cout, 3, stride, 1)
        self.bn = kit.norm(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(AvgPool2d(2, stride) if stride != 1 else nn.Identity(),
                                            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        out = fold(self.bn, fold(self.conv, self.neuron(x), sm), sm)
        return out + (x if self.downsample is None else fold(self.downsample, x, sm))


class SpikingBiRealResNet(nn.Module, base.StepModule):
    """Bi-Real spiking ResNet: full-precision ``stem``, ``blocks[i]`` :class:`BiRealBlock` of width
    ``widths[i]`` per stage (stride 2 at the start of every stage after the first), then global average
    pool and a full-precision FC."""

    def __init__(self, blocks: Sequence[int], num_classes: int = 1000, in_channels: int = 3,
                 stem: str = "bso", kit: LayerKit | None = None, widths: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        kit = kit or LayerKit()
        self.step_mode = kit.step_mode
        w0 = widths[0]
        if stem == "imagenet":
            conv = nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False)
        else:
            conv = nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False)
        stem_layers = [conv, nn.BatchNorm2d(w0)]
        if stem != "cifar":
            stem_layers.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem_layers)
        layers: list[nn.Module] = []
        cin = w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BiRealBlock(kit, cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, num_classes))
        real_convs_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = fold(self.stem, x, self.step_mode)
        x = self.layers(x)
        return fold(self.head, x, self.step_mode)


@register_model("resnet18")
def resnet18(num_classes: int = 1000, in_channels: int = 3, stem: str = "bso", method: str = "online",
             **kit) -> SpikingBiRealResNet:
    """Bi-Real ResNet-18: [4, 4, 4, 4] single-conv blocks (16 binary convs + stem + FC)."""
    return SpikingBiRealResNet((4, 4, 4, 4), num_classes, in_channels, stem, LayerKit(method, **kit))


@register_model("resnet34")
def resnet34(num_classes: int = 1000, in_channels: int = 3, stem: str = "bso", method: str = "online",
             **kit) -> SpikingBiRealResNet:
    """Bi-Real ResNet-34: [6, 8, 12, 6] single-conv blocks."""
    return SpikingBiRealResNet((6, 8, 12, 6), num_classes, in_channels, stem, LayerKit(method, **kit))


class SpikingBasicBlock(nn.Module, base.StepModule):
    """Spiking basic block (TET / Q-SNN ResNet-19): ``LIF(BN(conv(x)))`` -> ``BN(conv(.))`` + shortcut
    -> LIF. Both 3x3 convs and the 1x1 downsample receive spikes and are binary (Q-SNN lineage)."""

    def __init__(self, kit: LayerKit, cin: int, cout: int, stride: int):
        super().__init__()
        self.step_mode = kit.step_mode
        self.online = kit.method == "online"
        self.conv1, self.bn1, self.lif1 = kit.conv(cin, cout, 3, stride, 1), kit.norm(cout), kit.neuron()
        self.conv2, self.bn2 = kit.conv(cout, cout, 3, 1, 1), kit.norm(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(kit.conv(cin, cout, 1, stride, 0), nn.BatchNorm2d(cout))
        self.lif2 = kit.neuron()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        out = self.lif1(fold(self.bn1, fold(self.conv1, x, sm), sm))
        out = fold(self.bn2, fold(self.conv2, out, sm), sm)
        if self.downsample is not None:
            identity = fold(self.downsample, x, sm)
        else:   # online training: x is [spike, trace] on the batch axis; the sum needs the spikes
            identity = x.chunk(2)[0] if (self.online and self.training) else x
        return self.lif2(out + identity)


class SpikingResNet(nn.Module, base.StepModule):
    """Spiking ResNet of basic blocks (TET / Q-SNN lineage): full-precision stem conv + BN + LIF, stages of
    ``SpikingBasicBlock`` (binary convs), global average pool, full-precision FC.
    Stems: ``"cifar"`` (3x3 stride 1) or ``"imagenet"`` (7x7 stride 2 + 3x3/2 max pool)."""

    def __init__(self, blocks: Sequence[int], widths: Sequence[int], num_classes: int = 10, in_channels: int = 3,
                 stem: str = "cifar", kit: LayerKit | None = None):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        kit = kit or LayerKit()
        self.step_mode = kit.step_mode
        w0 = widths[0]
        conv = nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False) if stem == "imagenet" else \
            nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False)
        self.stem = nn.Sequential(conv, nn.BatchNorm2d(w0))
        self.stem_lif = kit.neuron()
        self.stem_pool = nn.Identity() if stem == "cifar" else nn.MaxPool2d(3, 2, 1)
        layers, cin = [], w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(SpikingBasicBlock(kit, cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = kit.spike_input(nn.Linear(cin, num_classes))
        real_convs_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sm = self.step_mode
        x = fold(self.stem_pool, self.stem_lif(fold(self.stem, x, sm)), sm)
        x = self.layers(x)
        return fold(self.fc, fold(self.pool, x, sm), sm)


@register_model("resnet19")
def resnet19(num_classes: int = 10, in_channels: int = 3, method: str = "bptt", **kit) -> SpikingResNet:
    """ResNet-19 for CIFAR: 3x3 stem with 128 channels, [3, 3, 2] blocks at 128/256/512 channels.
    ``**kit``: neuron / binarizer / AGMM options of ``LayerKit``."""
    return SpikingResNet((3, 3, 2), (128, 256, 512), num_classes, in_channels, "cifar", LayerKit(method, **kit))


@register_model("spiking_resnet18")
def spiking_resnet18(num_classes: int = 1000, in_channels: int = 3, stem: str = "imagenet", method: str = "bptt",
                     **kit) -> SpikingResNet:
    """Spiking ResNet-18 of two-conv basic blocks [2, 2, 2, 2] (Q-SNN's ImageNet model; AGMM's ImageNet
    architecture is a ResNet-18 of this lineage)."""
    return SpikingResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels, stem, LayerKit(method, **kit))
