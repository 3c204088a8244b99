"""The compiled popcount kernels (numba; optional extra ``fast``). Imported only when numba is installed;
module-level functions so that numba can cache their machine code next to this file."""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["binary_gemm", "binary_conv", "pack_pixels"]


@intrinsic
def _ctpop(typingctx, x):
    """LLVM's ``ctpop`` on a uint64 as an int64 (so that sums stay integers): one ``popcnt`` instruction on
    CPUs that have it."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.int64(types.uint64), codegen


PARALLEL_WORK = 1 << 20     # word-popcounts below which a second thread costs more than it saves


@numba.njit(cache=True, nogil=True, inline="always")
def _dot(a, wt, out_row, acc):
    """``out_row[n] = Σ_p 2^p·(2·popcount(a[p] AND wt[:, n]) − popcount(a[p]))`` for planes ``a [P, W]``.
    The innermost loop runs over output channels (``wt [W, N]``, contiguous in n), which LLVM vectorises."""
    out_row[:] = 0
    for p in range(a.shape[0]):
        acc[:] = 0
        ps = 0
        for k in range(a.shape[1]):
            x = a[p, k]
            ps += _ctpop(x)
            for n in range(wt.shape[1]):
                acc[n] += _ctpop(x & wt[k, n])
        for n in range(wt.shape[1]):
            out_row[n] += (2 * acc[n] - ps) << p


@numba.njit(cache=True, nogil=True, inline="always")
def _conv_row(x, wt, kh, kw, sh, sw, scale, bias, fma, inv_d, out, r, patch, acc, tmp):
    """Output row ``r = b·OH + oy``: gather each pixel's patch (planes × kh·kw·CW words) and dot it with
    every channel's row into ``acc [OW, N]``; then write ``fma(acc/d, scale, bias)`` (float64, rounded
    once) along the row of each NCHW channel (contiguous stores: channel-strided ones cost more than the
    popcounts)."""
    oh = out.shape[2]
    b, oy = r // oh, r % oh
    for ox in range(out.shape[3]):
        for p in range(x.shape[0]):
            q = 0
            for i in range(kh):
                for j in range(kw):
                    for c in range(x.shape[4]):
                        patch[p, q] = x[p, b, oy * sh + i, ox * sw + j, c]
                        q += 1
        _dot(patch, wt, acc[ox], tmp)
    for n in range(wt.shape[1]):
        for ox in range(out.shape[3]):
            a = np.float32(acc[ox, n]) * inv_d
            if fma:
                out[b, n, oy, ox] = np.float32(np.float64(a) * np.float64(scale[n]) + np.float64(bias[n]))
            else:
                out[b, n, oy, ox] = a + bias[n]


@numba.njit(cache=True, nogil=True, inline="always")
def _buffers(x, wt, out):
    """One thread's scratch: the patch, the row's accumulators, one pixel's plane accumulator."""
    return (np.empty((x.shape[0], wt.shape[0]), np.uint64), np.empty((out.shape[3], wt.shape[1]), np.int64),
            np.empty(wt.shape[1], np.int64))


@numba.njit(cache=True, nogil=True)
def _conv_serial(x, wt, kh, kw, sh, sw, scale, bias, fma, inv_d, out):
    patch, acc, tmp = _buffers(x, wt, out)
    for r in range(out.shape[0] * out.shape[2]):
        _conv_row(x, wt, kh, kw, sh, sw, scale, bias, fma, inv_d, out, r, patch, acc, tmp)


@numba.njit(parallel=True, cache=True, nogil=True)
def _conv_parallel(x, wt, kh, kw, sh, sw, scale, bias, fma, inv_d, out):
    for r in numba.prange(out.shape[0] * out.shape[2]):
        patch, acc, tmp = _buffers(x, wt, out)
        _conv_row(x, wt, kh, kw, sh, sw, scale, bias, fma, inv_d, out, r, patch, acc, tmp)


@numba.njit(cache=True, nogil=True)
def _pack_pixels(x, d, planes, ph, pw):
    bsz, h, wd, c = x.shape
    out = np.zeros((planes, bsz, h + 2 * ph, wd + 2 * pw, (c + 63) // 64), np.uint64)
    for b in range(bsz):
        for i in range(h):
            for j in range(wd):
                for word in range(out.shape[4]):
                    for p in range(planes):
                        bits = np.uint64(0)
                        for ch in range(word * 64, min(c, word * 64 + 64)):
                            q = np.int64(np.rint(x[b, i, j, ch] * d))
                            bits |= np.uint64((q >> p) & 1) << np.uint64(ch & 63)
                        out[p, b, i + ph, j + pw, word] = bits
    return out


def pack_pixels(x, d, planes, ph, pw):
    """``x float32 [B, C, H, W]`` of ``q/d`` -> ``uint64 [planes, B, H+2ph, W+2pw, ceil(C/64)]``."""
    return _pack_pixels(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), d, planes, ph, pw)


@numba.njit(cache=True, nogil=True)
def _gemm_serial(s, wt, out):
    tmp = np.empty(wt.shape[1], np.int64)
    for i in range(s.shape[1]):
        _dot(s[:, i], wt, out[i], tmp)


@numba.njit(parallel=True, cache=True, nogil=True)
def _gemm_parallel(s, wt, out):
    for i in numba.prange(s.shape[1]):
        _dot(s[:, i], wt, out[i], np.empty(wt.shape[1], np.int64))


def binary_gemm(s: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``s [P, M, W]`` bit planes, ``wt [W, N]`` -> ``int32 [M, N]``; rows split over threads only for large
    products (a thread's wake-up costs more than a small layer's whole product)."""
    out = np.empty((s.shape[1], wt.shape[1]), np.int32)
    big = s.size * wt.shape[1] >= PARALLEL_WORK
    (_gemm_parallel if big else _gemm_serial)(s, wt, out)
    return out


def binary_conv(x, wt, kernel, stride, out_size, scale, bias, d):
    """``x [P, B, Hp, Wp, CW]`` padded pixel words, ``wt [kh·kw·CW, N]`` -> ``float32 [B, N, OH, OW]``:
    ``fma(acc/d, scale, bias)`` with a scale (``ops.epilogue``'s rounding), else ``acc/d + bias``."""
    n = wt.shape[1]
    out = np.empty((x.shape[1], n, *out_size), np.float32)
    big = x.shape[0] * out.size * wt.shape[0] >= PARALLEL_WORK
    fma = scale is not None
    scale = np.ones(n, np.float32) if scale is None else scale.astype(np.float32, copy=False)
    bias = np.zeros(n, np.float32) if bias is None else bias.astype(np.float32, copy=False)
    (_conv_parallel if big else _conv_serial)(x, wt, kernel[0], kernel[1], stride[0], stride[1],
                                              scale, bias, fma, np.float32(1.0 / d), out)
    return out
