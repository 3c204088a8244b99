"""Binary GEMM on packed spikes: ``y[m, n] = 2·popcount(s[m] AND w⁺[n]) − popcount(s[m])``.

With spikes ``s ∈ {0, 1}`` and weights ``w ∈ {−1, +1}`` (``w⁺``: the bit that is 1 where ``w = +1``),
``Σ_k s_k·w_k = 2·popcount(s AND w⁺) − popcount(s)``: one AND and one popcount per 64-bit word, and
``popcount(s)`` is shared by every output channel. Zero padding (of a conv, of a row to 64 bits) is an
input bit 0 and counts nothing. Rows are the ``uint64`` words of ``format.pack_signs``' layout.

Two kernels compute the same integers:

* ``numba`` (optional extra ``fast``, ``_popcount_numba.py``): a compiled loop over (row, channel, word)
  with LLVM's ``ctpop`` (the CPU's ``popcnt``); rows are split over threads for large products only.
  Numba was chosen over a C extension through cffi because it ships as wheels for every platform PyPI
  serves (no compiler on the user's machine, no build step in the package), compiles for the host CPU's
  instruction set, and caches the machine code beside its module after the first call (seconds, once).
  On this project's 2-core machine it computed a 1024×576×128 spike GEMM in 0.9 ms where the numpy
  path took 13 ms (a busy machine; ``benchmarks/inference.py`` measures whole networks).
* numpy (the fallback, always there): ``bitwise_and`` of blocks of rows with all weights, then
  ``np.bitwise_count`` (numpy >= 2) or a 256-entry lookup table on the bytes; block size bounds memory.
  Numpy's bit operations are not faster than a float BLAS matmul: this path is for correctness.

``kernel()`` names the one in use; ``BSNN_POPCOUNT=numpy`` forces the fallback.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["binary_gemm", "pack_rows", "kernel", "popcount_rows"]

_POP8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)
_BLOCK = 1 << 21          # elements of the [rows, N, words] AND block of the numpy path


def pack_rows(bits: np.ndarray, k_pad: int) -> np.ndarray:
    """``bits [M, K]`` of {0, 1} (any dtype) -> ``uint64 [M, k_pad/64]``, bit k of a row at word k//64."""
    m, k = bits.shape
    if k != k_pad:
        bits = np.concatenate([bits, np.zeros((m, k_pad - k), bits.dtype)], axis=1)
    packed = np.packbits(bits.astype(bool, copy=False), axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8")


def _popcount(a: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)
    return _POP8[a.view(np.uint8)].reshape(*a.shape, 8).sum(-1, dtype=np.uint8)


def popcount_rows(s: np.ndarray) -> np.ndarray:
    return _popcount(s).sum(-1, dtype=np.int32)


def _gemm_numpy(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    m, words = s.shape
    n = w.shape[0]
    out = np.empty((m, n), np.int32)
    step = max(1, _BLOCK // max(1, n * words))
    for i in range(0, m, step):
        blk = s[i:i + step]
        both = _popcount(np.bitwise_and(blk[:, None, :], w[None, :, :])).sum(-1, dtype=np.int32)
        out[i:i + step] = 2 * both - popcount_rows(blk)[:, None]
    return out


def _load_numba():
    try:
        from ._popcount_numba import binary_gemm as gemm
    except ImportError:
        return None
    return gemm


_NUMBA = None if os.environ.get("BSNN_POPCOUNT") == "numpy" else _load_numba()


def kernel() -> str:
    return "numba" if _NUMBA is not None else "numpy"


def binary_gemm(s: np.ndarray, w: np.ndarray, use: str | None = None) -> np.ndarray:
    """``s uint64 [M, W]`` spikes, ``w uint64 [N, W]`` weight bits -> ``int32 [M, N]`` of ``Σ s·w``.
    ``use``: ``"numba"`` or ``"numpy"`` (default: the best available)."""
    s, w = np.ascontiguousarray(s), np.ascontiguousarray(w)
    if (use or kernel()) == "numba":
        if _NUMBA is None:
            raise RuntimeError("the numba kernel is not available (pip install 'bsnn[fast]')")
        return _NUMBA(s, w)
    return _gemm_numpy(s, w)
