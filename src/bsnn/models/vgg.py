"""The BSO paper's online spiking VGG-11 (Liang et al., ICML 2025).

64C3-128C3-AP2-256C3-256C3-AP2-512C3-512C3-AP2-512C3-512C3-GAP-FC: a full-precision first conv
(with bias) and classifier, seven binary 3x3 convs, BatchNorm then LIF after every conv, average
pooling on spikes, global average pooling before the classifier. Input channels and size are free
(3x32x32 CIFAR, 2x48x48 CIFAR10-DVS, 1x32x32 spectrograms, 2x34x34 N-MNIST).
"""
from __future__ import annotations

from torch import nn

from ..nn import AvgPool2d, SpikingSequential
from ..nn.init import real_convs_
from .layers import LayerKit
from .registry import register_model

__all__ = ["VGG11_CFG", "spiking_vgg11"]

VGG11_CFG = (64, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)


@register_model("vgg11")
def spiking_vgg11(num_classes: int = 10, in_channels: int = 3, method: str = "online",
                  cfg: list | None = None, **kit) -> SpikingSequential:
    """``**kit``: neuron / binarizer / AGMM options of ``LayerKit``."""
    kit = LayerKit(method, **kit)
    layers: list[nn.Module] = []
    cin = in_channels
    for i, v in enumerate(cfg or VGG11_CFG):
        if v == "M":
            layers.append(AvgPool2d(2))
            continue
        if i == 0:
            layers += [nn.Conv2d(cin, v, 3, 1, 1, bias=True), nn.BatchNorm2d(v), kit.neuron()]
        else:
            layers += [kit.conv(cin, v), kit.norm(v), kit.neuron()]
        cin = v
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1), kit.spike_input(nn.Linear(cin, num_classes))]
    model = SpikingSequential(*layers, step_mode=kit.step_mode)
    real_convs_(model, classifiers=0.01)       # binary layers init themselves
    return model
