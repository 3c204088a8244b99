"""Binary products on packed spikes: ``y = Σ_k s_k·w_k = 2·popcount(s AND w⁺) − popcount(s)``.

With spikes ``s ∈ {0, 1}`` and weights ``w ∈ {−1, +1}`` (``w⁺``: the bit that is 1 where ``w = +1``), a
product costs one AND and one popcount per 64-bit word, and ``popcount(s)`` is shared by every output
channel. Zero padding (of a conv, of a row to 64 bits) is an input bit 0 and counts nothing. Inputs that
are small integers ``q`` (average-pooled spikes times the window) come as bit planes ``[P, ...]`` and give
``Σ_p 2^p·(plane p's product)``.

* ``binary_gemm``: spike rows of ``uint64`` words (``format.pack_signs``' layout: bit k at word k//64)
  against weight *columns* ``[W, N]`` (``weight_columns``: word-major, so that the kernel's innermost loop
  runs over output channels, which vectorises).
* ``binary_conv``: a conv without im2col. Spikes are packed along channels per pixel (``pack_pixels``:
  ``[P, B, H+2p, W+2p, ceil(C/64)]``, zero border included) and the weight bits are reordered to
  (kernel row, kernel column, channel word) (``conv_weight_words``); each output pixel gathers its
  ``kh·kw·ceil(C/64)`` words once and meets every output channel.

Two kernels compute the same integers:

* ``numba`` (optional extra ``fast``, ``_popcount_numba.py``): compiled loops with LLVM's ``ctpop`` (the
  CPU's ``popcnt``, vectorised where the CPU allows), output rows split over threads for large layers.
  Numba was chosen over a C extension through cffi because it ships as wheels for every platform PyPI
  serves (no compiler on the user's machine, no build step in the package), compiles for the host CPU's
  instruction set, and caches the machine code beside its module after the first call (seconds, once).
  ``benchmarks/inference.py`` measures it against PyTorch (docs/benchmarks.md).
* numpy (the fallback, always there): ``bitwise_and`` of blocks of rows with all weights, then
  ``np.bitwise_count`` (numpy >= 2) or a 256-entry lookup table on the bytes; a conv goes through
  ``sliding_window_view`` of the pixel words. Slower than a float BLAS matmul: this path is for correctness.

``kernel()`` names the one in use; ``BSNN_POPCOUNT=numpy`` forces the fallback. While the numba kernel
runs a model, ``blas_single_thread()`` holds numpy's BLAS (the float layers) to one thread through
``threadpoolctl`` (part of the extra): OpenBLAS's idle threads spin and took the cores from numba's, which
made a VGG-11 forward 4x slower on this project's 2-core machine.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops import epilogue

__all__ = ["binary_gemm", "binary_conv", "pack_rows", "pack_pixels", "weight_columns", "conv_weight_words",
           "kernel", "popcount_rows", "blas_single_thread"]

_POP8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)
_BLOCK = 1 << 21          # elements of the [rows, N, words] AND block of the numpy path


def pack_rows(bits: np.ndarray, k_pad: int) -> np.ndarray:
    """``bits [..., K]`` of {0, 1} (any dtype) -> ``uint64 [..., k_pad/64]``, bit k at word k//64."""
    k = bits.shape[-1]
    if k != k_pad:
        bits = np.concatenate([bits, np.zeros((*bits.shape[:-1], k_pad - k), bits.dtype)], axis=-1)
    packed = np.packbits(bits.astype(bool, copy=False), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def pack_pixels(x: np.ndarray, d: int, padding, use: str | None = None) -> np.ndarray:
    """``x float32 [B, C, H, W]`` of spikes (``d = 1``) or pooled spikes ``q/d`` -> the bit planes of ``q``
    packed along channels: ``uint64 [P, B, H+2ph, W+2pw, ceil(C/64)]`` with a zero border."""
    (ph, pw), c, planes = padding, x.shape[1], int(d).bit_length()
    if _use_numba(use):
        return _NUMBA.pack_pixels(x.astype(np.float32, copy=False), float(d), planes, ph, pw)
    q = np.rint(x * d).astype(np.uint8) if d > 1 else x.astype(np.uint8)
    bits = np.stack([(q >> p) & 1 for p in range(planes)]).transpose(0, 1, 3, 4, 2)
    words = pack_rows(bits, 64 * -(-c // 64))
    return np.pad(words, ((0, 0), (0, 0), (ph, ph), (pw, pw), (0, 0))) if ph or pw else words


def weight_columns(rows: np.ndarray) -> np.ndarray:
    """File rows ``uint8 [N, K_pad/8]`` -> ``uint64 [K_pad/64, N]``."""
    return np.ascontiguousarray(np.ascontiguousarray(rows).view("<u8").T)


def conv_weight_words(rows: np.ndarray, channels: int, kernel) -> np.ndarray:
    """File rows ``uint8 [N, K_pad/8]`` (``F.unfold`` order) -> ``uint64 [kh·kw·ceil(C/64), N]`` in the
    (kernel row, kernel column, channel word) order of ``pack_pixels`` patches."""
    kh, kw = kernel
    bits = np.unpackbits(rows, axis=1, count=channels * kh * kw, bitorder="little")
    bits = bits.reshape(len(rows), channels, kh, kw).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(pack_rows(bits, 64 * -(-channels // 64)).reshape(len(rows), -1).T)


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)
    return _POP8[a.view(np.uint8)].reshape(*a.shape, 8).sum(-1, dtype=np.uint8)


def popcount_rows(s: np.ndarray) -> np.ndarray:
    """Set bits per row: ``uint64 [..., W]`` -> ``int32 [...]``."""
    return _popcount(s).sum(-1, dtype=np.int32)


def _gemm_numpy(s: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``s [M, W]`` (one plane), ``wt [W, N]`` -> ``int32 [M, N]``."""
    m, words = s.shape
    n = wt.shape[1]
    out = np.empty((m, n), np.int32)
    step = max(1, _BLOCK // max(1, n * words))
    for i in range(0, m, step):
        blk = s[i:i + step]
        both = _popcount(np.bitwise_and(blk[:, :, None], wt[None, :, :])).sum(1, dtype=np.int32)
        out[i:i + step] = 2 * both - popcount_rows(blk)[:, None]
    return out


def _planes_numpy(s: np.ndarray, wt: np.ndarray) -> np.ndarray:
    out = _gemm_numpy(s[0], wt)
    for p in range(1, len(s)):
        out += _gemm_numpy(s[p], wt) << p
    return out


def _load_numba():
    try:
        from . import _popcount_numba
    except ImportError:
        return None
    return _popcount_numba


_NUMBA = None if os.environ.get("BSNN_POPCOUNT") == "numpy" else _load_numba()
_BLAS = None          # threadpoolctl's controller, made on first use (False: not installed)


def kernel() -> str:
    """The popcount kernel in use: ``"numba"``, or ``"numpy"`` when numba is missing or ``BSNN_POPCOUNT=numpy``."""
    return "numba" if _NUMBA is not None else "numpy"


def blas_single_thread(use: str | None = None) -> contextlib.AbstractContextManager:
    """A context holding numpy's BLAS to one thread while the numba kernel is in use (else nothing)."""
    global _BLAS
    if (use or kernel()) != "numba" or _NUMBA is None:
        return contextlib.nullcontext()
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = ThreadpoolController()
        except ImportError:
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


def _use_numba(use: str | None) -> bool:
    if (use or kernel()) != "numba":
        return False
    if _NUMBA is None:
        raise RuntimeError("the numba kernel is not available (pip install 'bsnn[fast]')")
    return True


def binary_gemm(s: np.ndarray, wt: np.ndarray, use: str | None = None) -> np.ndarray:
    """``s uint64 [M, W]`` spikes (or ``[P, M, W]`` bit planes), ``wt uint64 [W, N]`` weight columns
    (``weight_columns``) -> ``int32 [M, N]`` of ``Σ s·w``. ``use``: ``"numba"`` or ``"numpy"`` (default:
    the best available)."""
    s, wt = np.ascontiguousarray(s), np.ascontiguousarray(wt)
    s = s[None] if s.ndim == 2 else s
    return _NUMBA.binary_gemm(s, wt) if _use_numba(use) else _planes_numpy(s, wt)


def binary_conv(x: np.ndarray, wt: np.ndarray, kernel, stride, scale=None, bias=None, d: int = 1,
                use: str | None = None) -> np.ndarray:
    """``x uint64 [P, B, Hp, Wp, CW]`` (``pack_pixels``), ``wt uint64 [kh·kw·CW, N]`` (``conv_weight_words``)
    -> ``float32 [B, N, OH, OW]``: ``acc = Σ_p 2^p Σ s_p·w`` over each patch, then ``ops.epilogue(acc/d,
    scale, bias)`` (the compiled kernel fuses it, with the same rounding)."""
    (kh, kw), (sh, sw) = kernel, stride
    size = ((x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1)
    x, wt = np.ascontiguousarray(x), np.ascontiguousarray(wt)
    if _use_numba(use):
        return _NUMBA.binary_conv(x, wt, kernel, stride, size, scale, bias, d)
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]     # [P, B, OH, OW, CW, kh, kw]
    acc = _planes_numpy(win.transpose(0, 1, 2, 3, 5, 6, 4).reshape(x.shape[0], -1, wt.shape[0]), wt)
    y = epilogue(acc if d == 1 else acc.astype(np.float32) / np.float32(d), scale, bias)
    return np.ascontiguousarray(y.reshape(x.shape[1], *size, -1).transpose(0, 3, 1, 2))
