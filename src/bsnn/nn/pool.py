"""Average pooling that saves nothing for backward.

``torch.nn.AvgPool2d`` makes autograd keep its input, although the gradient of an average only needs
the input's shape. On spike maps, and above all on the packed ``[spike, trace]`` tensors of online
training, that input is the largest thing saved per layer. This drop-in replacement saves the shape only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AvgPool2d"]


class _AvgPool2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.conf = (x.shape, x.dtype, x.device, kernel_size, stride, padding, ceil_mode, count_include_pad,
                    divisor_override)
        return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

    @staticmethod
    def backward(ctx, g):
        shape, dtype, device, k, s, p, ceil, incl, div = ctx.conf
        like = torch.zeros((), dtype=dtype, device=device).expand(shape)   # shape only, no memory
        return (torch.ops.aten.avg_pool2d_backward(g, like, k, s, p, ceil, incl, div),
                None, None, None, None, None, None)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` whose backward needs (and keeps) no copy of the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return super().forward(x)
        pair = nn.modules.utils._pair
        stride = self.stride if self.stride is not None else self.kernel_size
        return _AvgPool2dFn.apply(x, list(pair(self.kernel_size)), list(pair(stride)), list(pair(self.padding)),
                                  self.ceil_mode, self.count_include_pad, self.divisor_override)
