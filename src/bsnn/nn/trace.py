"""Forward on spikes, weight gradient on traces (the OTTT "replace" routing) in one pass.

The reference implementations (OTTT's ``WrapedSNNOp``, SpikingJelly's ``GradwithTrace``, the BSO code)
run every wrapped layer twice per time step: once on spikes without grad for the value, once on traces
with grad for the gradient. Here one autograd function computes ``op(spike, W)`` once, saves only the
trace, and in backward computes ``dW`` from the trace and ``dx = W^T g`` from the weight. Same gradients,
one convolution fewer per layer and step (``tests/test_nn.py`` checks the equality).
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .binary import is_latent_binary

__all__ = ["TraceRouted", "linear_with_trace", "conv2d_with_trace", "routing_check"]


class _LinearWithTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spike, trace, weight, bias):
        ctx.save_for_backward(trace, weight)
        ctx.has_bias = bias is not None
        return F.linear(spike, weight, bias)

    @staticmethod
    def backward(ctx, g):
        trace, weight = ctx.saved_tensors
        g_spike = g.matmul(weight.to(g.dtype)) if ctx.needs_input_grad[0] else None
        g2 = g.reshape(-1, g.shape[-1])
        g_w = g2.t().matmul(trace.reshape(-1, trace.shape[-1]).to(g.dtype)) if ctx.needs_input_grad[2] else None
        g_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return g_spike, None, g_w, g_b


class _Conv2dWithTrace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spike, trace, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(trace, weight)
        ctx.conf = (stride, padding, dilation, groups, None if bias is None else bias.shape)
        return F.conv2d(spike, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        trace, weight = ctx.saved_tensors
        stride, padding, dilation, groups, bias_shape = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[2],
                bias_shape is not None and ctx.needs_input_grad[3]]
        # convolution_backward takes the input for dW (the trace); dx depends on the input's shape only.
        g_x, g_w, g_b = torch.ops.aten.convolution_backward(
            g, trace.to(g.dtype), weight.to(g.dtype), bias_shape, stride, padding, dilation,
            False, [0, 0], groups, mask)
        return g_x, None, g_w, g_b, None, None, None, None


def linear_with_trace(spike, trace, weight, bias=None):
    """``F.linear(spike, weight, bias)`` whose weight gradient is computed from ``trace``."""
    return _LinearWithTrace.apply(spike, trace, weight, bias)


def conv2d_with_trace(spike, trace, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``F.conv2d`` on ``spike`` whose weight gradient is computed from ``trace``."""
    pair = nn.modules.utils._pair
    return _Conv2dWithTrace.apply(spike, trace, weight, bias, pair(stride), pair(padding),
                                  pair(dilation), groups)


class TraceRouted(nn.Module):
    """Wraps an ``nn.Linear`` or ``nn.Conv2d`` (binary or real) that receives spikes from an online neuron.

    In training mode the input is ``cat([spike, trace])`` (batch axis, see ``OnlineLIFNode``); the
    output is ``layer(spike)`` and the weight gradient is computed from the trace. In eval mode the
    input is plain spikes and the wrapped layer runs as is.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
                raise ValueError("TraceRouted supports Conv2d with numeric zero padding only")
        elif not isinstance(layer, nn.Linear):
            raise TypeError(f"TraceRouted wraps nn.Linear or nn.Conv2d, got {type(layer).__name__}")
        if is_latent_binary(layer.weight):
            raise TypeError("TraceRouted needs the weight used in forward; latent-weight layers are for BPTT")
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.layer(x)
        spike, trace = x.chunk(2)
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return linear_with_trace(spike, trace, layer.weight, layer.bias)
        return conv2d_with_trace(spike, trace, layer.weight, layer.bias, layer.stride,
                                 layer.padding, layer.dilation, layer.groups)


BATCH_MIXING = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)


@contextmanager
def routing_check(model: nn.Module):
    """Fail loudly where a module that treats batch entries jointly or randomly (BatchNorm, Dropout) sits
    between an online neuron and the ``TraceRouted`` layer it feeds: it would receive ``[spike; trace]``
    as one batch and mix statistics or masks across the two halves. Follows the neuron outputs through
    module calls during the forwards inside the context (one training step is enough)."""
    from .neuron import OnlineLIFNode

    carries: dict[int, weakref.ref] = {}              # tensors that hold [spike; trace], by id
    names = {m: n for n, m in model.named_modules()}

    def mark(t: torch.Tensor) -> None:
        carries[id(t)] = weakref.ref(t)

    def marked(t) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in carries and carries[id(t)]() is t

    def hook(module, args, out):
        if isinstance(module, OnlineLIFNode):
            if module.training and module.emit_trace:
                mark(out)
            return
        if isinstance(module, TraceRouted) or not isinstance(out, torch.Tensor):
            return
        if any(marked(a) for a in args):
            if isinstance(module, BATCH_MIXING):
                raise ValueError(
                    f"{type(module).__name__} at '{names.get(module, '?')}' receives an online neuron's "
                    "[spike; trace] batch: put it before the neuron (or after the weight layer), or build the "
                    "neuron with emit_trace=False")
            if next(module.children(), None) is None:          # a leaf passes the pair on (pooling, flatten)
                mark(out)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
