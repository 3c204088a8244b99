"""Transforms torchvision does not have.

``Cutout`` (DeVries & Taylor 2017, used by the BSO paper): one square hole of fixed side whose centre is
uniform over the image, clipped at the border. torchvision's ``RandomErasing`` samples area and aspect
ratio and keeps the box inside the image, which is a different augmentation.
"""
from __future__ import annotations

import torch

__all__ = ["Cutout"]


class Cutout(torch.nn.Module):
    """Zero one square hole of side ``length`` (clipped at the border) centred uniformly over the image
    ``[..., H, W]``; returns a copy."""

    def __init__(self, length: int = 16):
        super().__init__()
        self.length = length

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - self.length // 2, 0), min(cy + self.length // 2, h)
        x0, x1 = max(cx - self.length // 2, 0), min(cx + self.length // 2, w)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img

    def extra_repr(self) -> str:
        return f"length={self.length}"
