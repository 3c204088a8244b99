"""Binarizers for latent-weight layers: small named objects a layer takes (as Larq's quantizers).

* ``SignSTE``: sign with the clipped straight-through estimator (BSO paper §3.1, BinaryConnect).
* ``ScaledSign``: the Q-SNN / IR-Net form: standardise each output channel's latent kernel, take the
  sign, multiply by a per-channel power-of-two scale ``2^round(log2(mean|w_std|))`` (no gradient);
  backward through a tanh-shaped surrogate ``k·t·(1 − tanh²(t·w_std))`` with ``k = max(1/t, 1)`` and
  ``t`` annealed log-uniformly from ``t_start`` to ``t_end`` over training (``anneal(progress)``).

* ``CenteredScaledSign``: ``scale · sign(w − center)`` with a clipped or identity straight-through
  estimator; the named variants are the binary-network weight binarizers the SEI-BWSNN reconstruction
  offers: ``channel_scaled`` (ReActNet/XNOR: per-output-channel ``mean|w|``), ``centred_channel``
  (BinaryViT: channel-centred sign, channel ``mean|w|``), ``centred_layer`` (BiT: layer-centred sign,
  layer ``mean|w|``) and ``standardized`` (BESTformer: channel-centred sign, no scale, identity STE).
  Scales carry no gradient (they are detached, as in ReActNet).

Modules with an ``anneal(progress)`` method are called by the trainer at the start of every epoch with
``progress = epoch / epochs``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Binarizer", "SignSTE", "ScaledSign", "CenteredScaledSign", "sign", "sign_ste", "BINARIZERS",
           "make_binarizer"]


def sign(w: torch.Tensor) -> torch.Tensor:
    """±1 of ``w``'s dtype with 0 -> +1 (``torch.sign(0)`` is 0, which is not a binary value). Every
    binarization in bsnn goes through this function."""
    return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)


class _SignSTEFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, clip: float):
        ctx.save_for_backward(w)
        ctx.clip = clip
        return sign(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= ctx.clip).to(grad.dtype), None


class _TanhSignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor, t: float, k: float):
        ctx.save_for_backward(w)
        ctx.t, ctx.k = t, k
        return sign(w)

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return grad * ctx.k * ctx.t * (1 - torch.tanh(ctx.t * w) ** 2), None, None


def sign_ste(w: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """sign(w) with 0 -> +1; gradient passes straight through where |w| <= clip, is zero elsewhere."""
    return _SignSTEFn.apply(w, clip)


class Binarizer(nn.Module):
    """Base class: maps a latent real weight to its binary forward value."""

    def scale_count(self, weight: torch.Tensor) -> int:
        """Real scalars the deployed layer needs besides the signs (a per-channel or per-layer scale)."""
        return 0


class SignSTE(Binarizer):
    """Sign with the clipped straight-through estimator (Courbariaux et al. 2016)."""

    def __init__(self, clip: float = 1.0):
        super().__init__()
        self.clip = clip

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sign_ste(w, self.clip)

    def extra_repr(self) -> str:
        return f"clip={self.clip}"


class ScaledSign(Binarizer):
    """Q-SNN / IR-Net binarizer: per-channel standardisation, sign, power-of-two scale, tanh surrogate."""

    def __init__(self, t_start: float = 0.1, t_end: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.t_start, self.t_end, self.eps = t_start, t_end, eps
        self.t = t_start

    def anneal(self, progress: float) -> None:
        """progress in [0, 1]: t moves log-uniformly from t_start to t_end."""
        p = min(max(progress, 0.0), 1.0)
        self.t = math.exp(math.log(self.t_start) + p * (math.log(self.t_end) - math.log(self.t_start)))

    @property
    def k(self) -> float:
        """The current surrogate sharpness (annealed from ``k_start`` to ``k_end`` by ``anneal``)."""
        return max(1.0 / self.t, 1.0)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        flat = w.flatten(1)
        w_std = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + self.eps)).view_as(w)
        with torch.no_grad():
            scale = torch.exp2(torch.round(torch.log2(w_std.abs().flatten(1).mean(1))))
        return _TanhSignFn.apply(w_std, self.t, self.k) * scale.view(-1, *([1] * (w.dim() - 1)))

    def scale_count(self, weight: torch.Tensor) -> int:
        """Per-channel scales the binarizer derives from ``weight`` (one per output channel)."""
        return weight.shape[0]

    def extra_repr(self) -> str:
        return f"t={self.t:.4g} (from {self.t_start} to {self.t_end})"


class CenteredScaledSign(Binarizer):
    """``scale · sign(w − center)``: ``center`` and ``scale`` are ``"none"``, ``"channel"`` (per output
    channel) or ``"layer"``; the scale is ``mean|w|`` over that extent, detached. ``ste``: ``"clip"``
    passes the gradient where ``|w − center| <= 1``, ``"identity"`` everywhere."""

    EXTENTS = ("none", "channel", "layer")

    def __init__(self, center: str = "none", scale: str = "channel", ste: str = "clip"):
        super().__init__()
        if center not in self.EXTENTS or scale not in self.EXTENTS:
            raise ValueError(f"center and scale must be one of {self.EXTENTS}, got {center!r}, {scale!r}")
        if ste not in ("clip", "identity"):
            raise ValueError(f"ste must be 'clip' or 'identity', got {ste!r}")
        self.center, self.scale, self.ste = center, scale, ste

    @staticmethod
    def _reduce(w: torch.Tensor, extent: str) -> torch.Tensor:
        if extent == "channel":
            return w.flatten(1).mean(1).view(-1, *([1] * (w.dim() - 1)))
        return w.mean()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wc = w - self._reduce(w, self.center) if self.center != "none" else w
        b = sign_ste(wc, math.inf if self.ste == "identity" else 1.0)
        if self.scale == "none":
            return b
        return b * self._reduce(w.detach().abs(), self.scale)

    def scale_count(self, weight: torch.Tensor) -> int:
        """Per-channel scales the binarizer derives from ``weight`` (one per output channel)."""
        return {"none": 0, "channel": weight.shape[0], "layer": 1}[self.scale]

    def extra_repr(self) -> str:
        return f"center={self.center}, scale={self.scale}, ste={self.ste}"


BINARIZERS = {
    "sign_ste": SignSTE,
    "scaled_sign": ScaledSign,
    "channel_scaled": lambda: CenteredScaledSign("none", "channel", "clip"),
    "centred_channel": lambda: CenteredScaledSign("channel", "channel", "clip"),
    "centred_layer": lambda: CenteredScaledSign("layer", "layer", "clip"),
    "standardized": lambda: CenteredScaledSign("channel", "none", "identity"),
}


def make_binarizer(name: str) -> Binarizer:
    """A binarizer by name (``BINARIZERS``): ``sign_ste``, ``scaled_sign``, ..."""
    if name not in BINARIZERS:
        raise ValueError(f"binarizer must be one of {tuple(BINARIZERS)}, got {name!r}")
    return BINARIZERS[name]()
