"""Vectorised numpy operators of the runtime (float32, NCHW), written to round as PyTorch's CPU kernels do.

* ``im2col`` orders a patch as ``F.unfold`` does (channel, kernel row, kernel column), so a conv is
  ``im2col(x) @ W.reshape(N, -1).T``.
* ``epilogue`` applies a folded BatchNorm as one fused multiply-add rounded once to float32 (PyTorch's
  vectorised CPU BatchNorm uses FMA); numpy has no FMA, so it is computed in float64 (the product of two
  float32 is exact there) and rounded to float32.
* pooling sums a window in row-major order and divides, as ``avg_pool2d`` does; the divisor follows
  PyTorch's rule for ``ceil_mode`` and ``count_include_pad``.
* ``lif_step`` is the neuron of the file format (see ``format.py``), with PyTorch's operation order.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["im2col", "conv_out_size", "pool_out_size", "epilogue", "avgpool2d", "maxpool2d",
           "global_avgpool", "lif_step"]


def conv_out_size(n: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution along one axis (size ``n``, kernel ``k``, stride ``s``, padding ``p``)."""
    return (n + 2 * p - k) // s + 1


def im2col(x: np.ndarray, kernel, stride, padding) -> tuple[np.ndarray, tuple[int, int]]:
    """``x [B, C, H, W]`` -> ``([B·OH·OW, C·kh·kw], (OH, OW))``, rows in (b, oh, ow) order."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]   # [B, C, OH, OW, kh, kw]
    b, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(b * oh * ow, c * kh * kw), (oh, ow)


def epilogue(acc: np.ndarray, scale: np.ndarray | None, bias: np.ndarray | None) -> np.ndarray:
    """Per-channel (last axis) ``fma(acc, scale, bias)``, or ``acc + bias``, in float32."""
    if scale is not None:
        out = acc.astype(np.float64) * scale.astype(np.float64)
        if bias is not None:
            out += bias.astype(np.float64)
        return out.astype(np.float32)
    acc = acc.astype(np.float32, copy=False)
    return acc + bias if bias is not None else acc


def channel_fma(x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``fma(x, scale, bias)`` along axis 1 of ``[B, C, ...]``."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = x.astype(np.float64) * scale.astype(np.float64).reshape(shape) + bias.astype(np.float64).reshape(shape)
    return out.astype(np.float32)


def pool_out_size(n: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    """Output length of a pooling along one axis, with PyTorch's ``ceil_mode`` rule (the last window
    starts inside the input or the left padding)."""
    o = (n + 2 * p - k + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:      # the last window must start inside the input or left pad
        o -= 1
    return o


def _windows(x: np.ndarray, kernel, stride, padding, ceil_mode: bool, fill: float):
    """Padded sliding windows ``[B, C, OH, OW, kh, kw]`` (extra right/bottom padding for ceil_mode)."""
    H, W = x.shape[2:]
    oh = pool_out_size(H, kernel[0], stride[0], padding[0], ceil_mode)
    ow = pool_out_size(W, kernel[1], stride[1], padding[1], ceil_mode)
    need_h, need_w = (oh - 1) * stride[0] + kernel[0], (ow - 1) * stride[1] + kernel[1]
    pads = ((0, 0), (0, 0), (padding[0], max(0, need_h - H - padding[0])),
            (padding[1], max(0, need_w - W - padding[1])))
    xp = np.pad(x, pads, constant_values=fill)
    win = sliding_window_view(xp, tuple(kernel), axis=(2, 3))[:, :, ::stride[0], ::stride[1]]
    return win[:, :, :oh, :ow], (oh, ow)


def _divisor(n: int, o: int, k: int, s: int, p: int, include_pad: bool) -> np.ndarray:
    start = np.arange(o) * s - p
    end = np.minimum(start + k, n + p)
    size = end - start
    valid = np.minimum(end, n) - np.maximum(start, 0)
    return size if include_pad else valid


def avgpool2d(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True) -> np.ndarray:
    """``avg_pool2d`` of ``x [B, C, H, W]``, summing each window in row-major order; the divisor follows
    ``ceil_mode`` and ``count_include_pad`` as in PyTorch."""
    win, (oh, ow) = _windows(x, kernel, stride, padding, ceil_mode, 0.0)
    acc = np.zeros(win.shape[:4], np.float32)
    for i in range(kernel[0]):               # row-major window order, as PyTorch's kernel sums
        for j in range(kernel[1]):
            acc += win[..., i, j]
    H, W = x.shape[2:]
    dh = _divisor(H, oh, kernel[0], stride[0], padding[0], count_include_pad)
    dw = _divisor(W, ow, kernel[1], stride[1], padding[1], count_include_pad)
    return acc / np.outer(dh, dw).astype(np.float32)


def maxpool2d(x, kernel, stride, padding) -> np.ndarray:
    """``max_pool2d`` of ``x [B, C, H, W]`` (padding counts as -inf)."""
    win, _ = _windows(x, kernel, stride, padding, False, -np.inf)
    return win.max(axis=(-2, -1))


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """Mean over H and W: ``[B, C, H, W]`` -> ``[B, C, 1, 1]`` float32."""
    return x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)


def lif_step(node: dict, v: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the file's LIF: returns ``(spikes float32 {0,1}, new membrane)``."""
    f32 = np.float32
    tau, vth, v_reset = f32(node["tau"]), f32(node["v_threshold"]), node["v_reset"]
    if node["charge"] == "decay":
        h = v * f32(1.0 - 1.0 / node["tau"]) + x
    else:
        vr = f32(0.0 if v_reset is None else v_reset)
        h = v + (x - (v - vr)) / tau if node["decay_input"] else v - (v - vr) / tau + x
    s = (h >= vth).astype(np.float32)
    if v_reset is None:
        return s, h - s * vth
    return s, s * f32(v_reset) + (1 - s) * h
