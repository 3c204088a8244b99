"""The compiled popcount GEMM (numba; optional extra ``fast``). Imported only when numba is installed;
module-level functions so that numba can cache their machine code next to this file."""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

__all__ = ["binary_gemm"]


@intrinsic
def _ctpop(typingctx, x):
    """LLVM's ``ctpop`` on a uint64: one ``popcnt`` instruction on CPUs that have it."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


PARALLEL_WORK = 1 << 24     # word-popcounts below which threads cost more than they save


def _gemm_rows(s, w, out, i):
    words, n = s.shape[1], w.shape[0]
    ps = 0
    for k in range(words):
        ps += _ctpop(s[i, k])
    for j in range(n):
        acc = 0
        for k in range(words):
            acc += _ctpop(s[i, k] & w[j, k])
        out[i, j] = 2 * acc - ps


_row = numba.njit(cache=True, nogil=True, inline="always")(_gemm_rows)


@numba.njit(cache=True, nogil=True)
def _gemm_serial(s, w, out):
    for i in range(s.shape[0]):
        _row(s, w, out, i)


@numba.njit(parallel=True, cache=True, nogil=True)
def _gemm_parallel(s, w, out):
    for i in numba.prange(s.shape[0]):
        _row(s, w, out, i)


def binary_gemm(s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rows split over threads only for large products: a thread pool's wake-up costs milliseconds on a
    busy machine, more than a small layer's whole GEMM."""
    out = np.empty((s.shape[0], w.shape[0]), np.int32)
    big = s.shape[0] * s.shape[1] * w.shape[0] >= PARALLEL_WORK
    (_gemm_parallel if big else _gemm_serial)(s, w, out)
    return out
