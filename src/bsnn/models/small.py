"""Small networks for digits / MNIST / N-MNIST: first and last layers real-valued, hidden layers binary."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..nn import AvgPool2d, SpikingSequential
from ..nn.init import classifier_
from .layers import LayerKit
from .registry import register_model

__all__ = ["mlp", "convnet"]


@register_model("mlp")
def mlp(num_classes: int = 10, in_features: int = 64, hidden: Sequence[int] = (256, 256),
        method: str = "online", **kit) -> SpikingSequential:
    """Flatten -> FP Linear -> [BN -> LIF -> binary Linear]* -> BN -> LIF -> FP Linear.
    ``**kit``: neuron / binarizer / AGMM options of ``LayerKit``."""
    if len(hidden) < 1:
        raise ValueError("hidden needs at least one width")
    if any(w < 1 for w in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
    kit = LayerKit(method, **kit)
    layers: list[nn.Module] = [nn.Flatten(1), nn.Linear(in_features, hidden[0], bias=False),
                               nn.BatchNorm1d(hidden[0]), kit.neuron()]
    for a, b in zip(hidden[:-1], hidden[1:]):
        layers += [kit.linear(a, b), kit.norm(b, dims=1), kit.neuron()]
    head = nn.Linear(hidden[-1], num_classes)
    classifier_(head)
    layers.append(kit.spike_input(head))
    return SpikingSequential(*layers, step_mode=kit.step_mode)


@register_model("convnet")
def convnet(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
            channels: Sequence[int] = (32, 64, 128), head: str = "flatten", method: str = "online",
            **kit) -> SpikingSequential:
    """FP conv, then one binary 3x3 conv per further width; each conv is followed by BN -> LIF, and by
    AvgPool(2) on the spikes while the map is larger than 7x7 (28 -> 14 -> 7). The head is a FP Linear
    on the flattened spike map (``head="flatten"``) or on its global average (``head="gap"``)."""
    if len(channels) < 2:
        raise ValueError("channels needs at least two widths (one FP conv, one binary conv)")
    if any(c < 1 for c in channels):
        raise ValueError(f"channels must be >= 1, got {list(channels)}")
    if head not in ("flatten", "gap"):
        raise ValueError(f"head must be 'flatten' or 'gap', got {head!r}")
    kit = LayerKit(method, **kit)
    layers: list[nn.Module] = []
    size = image_size
    for i, (a, b) in enumerate(zip([in_channels, *channels[:-1]], channels)):
        if i == 0:
            layers += [nn.Conv2d(a, b, 3, 1, 1, bias=False), nn.BatchNorm2d(b), kit.neuron()]
        else:
            layers += [kit.conv(a, b), kit.norm(b), kit.neuron()]
        if size > 7:
            layers.append(AvgPool2d(2))
            size //= 2
    if head == "gap":
        layers.append(nn.AdaptiveAvgPool2d(1))
        features = channels[-1]
    else:
        features = channels[-1] * size * size
    fc = nn.Linear(features, num_classes)
    classifier_(fc)
    layers += [nn.Flatten(1), kit.spike_input(fc)]
    return SpikingSequential(*layers, step_mode=kit.step_mode)
