"""Readable names of a model's layers for legends: ``"4 BinaryLinear 512→512"`` instead of ``"4"``.

Metrics keep module paths as keys (``flip_step/4``, ``fire/3``: stable, what ``state_dict`` uses); a run
folder's ``layers.json`` maps each path to its label, and ``bsnn plot`` reads it.
"""
from __future__ import annotations

from spikingjelly.activation_based import base
from torch import nn

__all__ = ["layer_labels", "LABELS_FILE"]

LABELS_FILE = "layers.json"


def _describe(m: nn.Module) -> str | None:
    inner = getattr(m, "layer", None)                 # TraceRouted wraps its weight layer
    if isinstance(inner, (nn.Linear, nn.Conv2d)):
        m = inner
    if isinstance(m, nn.Linear):
        return f"{type(m).__name__} {m.in_features}→{m.out_features}"
    if isinstance(m, nn.Conv2d):
        k = "x".join(map(str, m.kernel_size))
        return f"{type(m).__name__} {k} {m.in_channels}→{m.out_channels}"
    if isinstance(m, base.MemoryModule) and not any(isinstance(c, base.MemoryModule) for c in m.children()):
        return type(m).__name__
    return None


def layer_labels(model: nn.Module) -> dict[str, str]:
    """``{module path: "path Type shape"}`` for weight layers and neurons (the keys metrics use)."""
    labels = {}
    for name, m in model.named_modules():
        text = _describe(m)
        if text is not None and name:
            labels[name.removesuffix(".layer")] = f"{name.removesuffix('.layer')} {text}"
    return labels
