"""Weight initialisation shared by the layers and models (one place for each rule).

* ``kaiming_``: Kaiming-normal, fan-out, ReLU gain (He et al. 2015) — every conv and binary layer, as the
  BSO and Bi-Real reference code initialise them; a bias starts at 0.
* ``classifier_``: N(0, std) weights and a zero bias — the classifiers of the BSO paper's models
  (std 0.01) and of the spiking Transformer (std 0.02, truncated at ±2 std as in DeiT/QKFormer).
* ``real_convs_``: ``kaiming_`` on every full-precision conv of a model (binary layers init themselves).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["kaiming_", "classifier_", "real_convs_"]


@torch.no_grad()
def kaiming_(weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Kaiming-normal weight (fan-out, ReLU gain) and zero bias, in place."""
    nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
    if bias is not None:
        nn.init.zeros_(bias)


@torch.no_grad()
def classifier_(fc: nn.Linear, std: float = 0.01, truncated: bool = False) -> nn.Linear:
    """Normal(0, ``std``) weight and zero bias for a classifier layer, in place."""
    (nn.init.trunc_normal_ if truncated else nn.init.normal_)(fc.weight, std=std)
    if fc.bias is not None:
        nn.init.zeros_(fc.bias)
    return fc


def real_convs_(model: nn.Module, classifiers: float | None = None) -> None:
    """``kaiming_`` on every real ``nn.Conv2d``; with ``classifiers`` (a std), also ``classifier_`` on every
    ``nn.Linear``, in module order."""
    from .binary import BinaryParameter             # binary.py uses this module

    for m in model.modules():
        if isinstance(m, nn.Conv2d) and not isinstance(m.weight, BinaryParameter):
            kaiming_(m.weight, m.bias)
        elif classifiers is not None and isinstance(m, nn.Linear):
            classifier_(m, classifiers)
