"""Binarizers for latent-weight layers: small named objects a layer takes (as Larq's quantizers)."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["Binarizer", "SignSTE", "sign_ste"]


class _SignSTEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, clip: float):
        ctx.save_for_backward(w)
        ctx.clip = clip
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= ctx.clip).to(grad.dtype), None


def sign_ste(w: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """sign(w) with 0 -> +1; gradient passes straight through where |w| <= clip, is zero elsewhere."""
    return _SignSTEFn.apply(w, clip)


class Binarizer(nn.Module):
    """Base class: maps a latent real weight to its binary forward value."""


class SignSTE(Binarizer):
    """Sign with the clipped straight-through estimator (Courbariaux et al. 2016)."""

    def __init__(self, clip: float = 1.0):
        super().__init__()
        self.clip = clip

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sign_ste(w, self.clip)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"
