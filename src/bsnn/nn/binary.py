"""Binary weight layers and the parameter tag that marks binary weights.

Binary parameters are found by their tag (:class:`BinaryParameter` and its ``kind``), never by the
class of the layer holding them, so optimizers, summaries and exporters work on any model.

* ``kind="binary"``: the tensor itself holds exactly ±1 (BSO/T-BSO flip it; no latent copy exists).
* ``kind="latent"``: a real tensor that the layer binarizes in its forward (BPTT/STE baselines, AGMM).
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import init
from .binarize import Binarizer, SignSTE, sign

__all__ = [
    "BinaryParameter",
    "BinaryConv2d",
    "BinaryLinear",
    "LatentBinaryConv2d",
    "LatentBinaryLinear",
    "binary_parameters",
    "latent_binary_parameters",
    "real_parameters",
    "is_binary",
    "is_latent_binary",
    "sign_",
]

KINDS = ("binary", "latent")


def _rebuild_binary_parameter(data, requires_grad, kind):
    return BinaryParameter(data, requires_grad, kind)


# Loading with ``torch.load(weights_only=True)``: the safe unpickler calls only functions it knows.
# This one builds a tensor from a tensor, a bool and a checked string, and runs nothing else, so it
# is allowed. (Saving plain tensors and re-tagging on load would be the alternative; but state dicts
# already hold plain tensors, since ``state_dict()`` detaches, and the layers re-tag them when they
# load them, so only a pickled parameter itself reaches this function, and it then keeps its tag.)
torch.serialization.add_safe_globals([_rebuild_binary_parameter])


REAL_BITS = 32          # what a real parameter costs in a deployed model


class BinaryParameter(nn.Parameter):
    """An ``nn.Parameter`` tagged as a 1-bit weight; the tag survives ``deepcopy``, pickling and ``.to()``.
    ``bit_width``: what one element costs deployed (read by ``bsnn.measure``, as Larq reads ``precision``)."""

    bit_width = 1

    def __new__(cls, data=None, requires_grad: bool = True, kind: str = "binary"):
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        p = super().__new__(cls, data, requires_grad)
        p.kind = kind
        return p

    def __deepcopy__(self, memo):
        if id(self) not in memo:
            memo[id(self)] = type(self)(
                self.data.clone(memory_format=torch.preserve_format), self.requires_grad, self.kind
            )
        return memo[id(self)]

    def __reduce_ex__(self, protocol):
        return (_rebuild_binary_parameter, (self.data, self.requires_grad, self.kind))

    def __repr__(self):
        return f"BinaryParameter(kind={self.kind}) containing:\n{torch.Tensor.__repr__(self.data)}"


def is_binary(p: torch.Tensor) -> bool:
    """True for weights that hold exactly ±1 (no latent copy)."""
    return isinstance(p, BinaryParameter) and p.kind == "binary"


def is_latent_binary(p: torch.Tensor) -> bool:
    """True for real latent weights that are binarized in the forward pass."""
    return isinstance(p, BinaryParameter) and p.kind == "latent"


def binary_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The exact ±1 weights of ``model`` (trained by BSO/T-BSO)."""
    return (p for p in module.parameters() if is_binary(p))


def latent_binary_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """The latent real weights of ``model``'s latent-binary layers (trained through a binarizer)."""
    return (p for p in module.parameters() if is_latent_binary(p))


def real_parameters(module: nn.Module) -> Iterator[nn.Parameter]:
    """Every parameter of ``model`` that is not a ``BinaryParameter``."""
    return (p for p in module.parameters() if not isinstance(p, BinaryParameter))


@torch.no_grad()
def sign_(t: torch.Tensor) -> torch.Tensor:
    """In-place ``binarize.sign``."""
    return t.copy_(sign(t))


def _tag_weight(layer: nn.Module, kind: str) -> None:
    layer.weight = BinaryParameter(layer.weight.data, layer.weight.requires_grad, kind)


class _ExactBinary:
    """Kaiming-normal init, then the sign: the weight is exactly ±1 from the start."""

    def reset_parameters(self) -> None:
        init.kaiming_(self.weight, self.bias)
        sign_(self.weight)


class _LatentBinary:
    """A real latent weight (Kaiming-normal init) that ``self.binarizer`` binarizes in every forward."""

    def _attach(self, binarizer: Binarizer | None) -> None:
        _tag_weight(self, "latent")
        self.binarizer = binarizer if binarizer is not None else SignSTE()

    def reset_parameters(self) -> None:
        init.kaiming_(self.weight, self.bias)


class BinaryConv2d(_ExactBinary, nn.Conv2d):
    """``nn.Conv2d`` whose weight holds exactly ±1: the sign of a Kaiming-normal init, then flips only."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, device=device, dtype=dtype)
        _tag_weight(self, "binary")


class BinaryLinear(_ExactBinary, nn.Linear):
    """``nn.Linear`` whose weight holds exactly ±1."""

    def __init__(self, in_features, out_features, bias=False, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        _tag_weight(self, "binary")


class LatentBinaryConv2d(_LatentBinary, nn.Conv2d):
    """Conv2d with a real latent weight, binarized by ``binarizer`` in every forward (STE training)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=False, binarizer: Binarizer | None = None, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, device=device, dtype=dtype)
        self._attach(binarizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.binarizer(self.weight), self.bias)


class LatentBinaryLinear(_LatentBinary, nn.Linear):
    """Linear layer with a real latent weight, binarized by ``binarizer`` in every forward."""

    def __init__(self, in_features, out_features, bias=False, binarizer: Binarizer | None = None,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self._attach(binarizer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.binarizer(self.weight), self.bias)
