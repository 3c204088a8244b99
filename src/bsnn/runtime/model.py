"""Run a packed model over T steps with its own membrane state: numpy only (no torch).

``path="reference"`` unpacks every binary weight to ±1 float32 once and computes each layer as a float
matmul (a conv through ``im2col``). ``path="packed"`` keeps binary weights as 64-bit words and computes
a binary layer whose input is spikes with ``popcount`` (``popcount.py``). Its input may also be average-
pooled spikes, ``q/d`` with integer ``q`` and a power-of-two window ``d`` (VGG's pooling before a binary
conv): then ``q`` is split into bit planes and ``y = Σ_b 2^b·gemm(plane_b) / d``, exact as well. Other
inputs of a binary layer (real values) and all full-precision layers take the float path. Both paths
give the same integers for binary layers and the same rounding afterwards (see ``ops.py``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from . import ops
from .format import padded_k, read, unpack_signs
from .popcount import (binary_conv, binary_gemm, blas_single_thread, conv_weight_words, pack_pixels, pack_rows,
                       weight_columns)

__all__ = ["PackedModel", "load"]

PATHS = ("reference", "packed")


def load(path: str | Path, mode: str = "packed", kernel: str | None = None) -> "PackedModel":
    """Read a packed model file into a :class:`PackedModel` (``mode``: ``"packed"`` or ``"reference"``;
    ``kernel``: the popcount kernel, default the best available)."""
    desc, tensors = read(path)
    return PackedModel(desc, tensors, mode, kernel)


def _domains(nodes: list[dict]) -> dict[str, int]:
    """Node -> d where its output is spikes (d = 1) or pooled spikes q/d (d a power of two); 0: real."""
    dom = {"input": 0}
    for n in nodes:
        src = dom[n["inputs"][0]]
        d = 0
        if n["op"] == "lif":
            d = 1
        elif n["op"] in ("flatten", "maxpool2d"):
            d = src
        elif n["op"] == "avgpool2d" and src == 1 and not any(n["padding"]) and not n["ceil_mode"]:
            area = n["kernel"][0] * n["kernel"][1]
            d = area if area & (area - 1) == 0 and area <= 128 else 0
        dom[n["name"]] = d
    return dom


class PackedModel:
    """``PackedModel(desc, tensors, mode)``; ``run(x)`` returns the logits summed over T."""

    def __init__(self, desc: dict, tensors: dict[str, np.ndarray], mode: str = "packed",
                 kernel: str | None = None):
        if mode not in PATHS:
            raise ValueError(f"mode must be one of {PATHS}, got {mode!r}")
        self.desc, self.mode, self.kernel = desc, mode, kernel
        self.nodes: list[dict] = desc["nodes"]
        self.time_steps = int(desc["time_steps"])
        self.input_shape = tuple(desc["input_shape"])
        self.temporal = bool(desc.get("temporal", False))
        self.class_names = desc.get("class_names")
        self.domain = _domains(self.nodes)
        self._t = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in tensors.items()}
        self._dense: dict[str, np.ndarray] = {}
        self._words: dict[str, np.ndarray] = {}
        last = {}
        for i, n in enumerate(self.nodes):
            for src in n["inputs"]:
                last[src] = i
        self._last_use = last
        self.state: dict[str, np.ndarray] = {}
        self.step_index = 0                          # time step of the next ``step``

    # -- weights -------------------------------------------------------------------------------------
    @staticmethod
    def fan_in(n: dict) -> int:
        """Inputs per output of a weight node: ``in_features``, or ``in_channels·kh·kw`` for a conv."""
        return n["in_features"] if n["op"] == "linear" else n["in_channels"] * n["kernel"][0] * n["kernel"][1]

    def dense_weight(self, n: dict) -> np.ndarray:
        """``[N, K]`` float32: ±1 for a binary layer, the real weight otherwise."""
        w = self._dense.get(n["name"])
        if w is None:
            raw = self._t[n["name"] + ".weight"]
            w = unpack_signs(raw, self.fan_in(n)) if n["binary"] else raw.reshape(len(raw), -1)
            self._dense[n["name"]] = w = np.ascontiguousarray(w.T)     # [K, N] for x @ w
        return w

    def _weight_words(self, n: dict) -> np.ndarray:
        """Binary weight bits as ``uint64 [words, N]`` columns; a conv's in ``pack_pixels``' word order."""
        w = self._words.get(n["name"])
        if w is None:
            raw = np.ascontiguousarray(self._t[n["name"] + ".weight"])
            w = conv_weight_words(raw, n["in_channels"], n["kernel"]) if n["op"] == "conv2d" else weight_columns(raw)
            self._words[n["name"]] = w
        return w

    # -- layers --------------------------------------------------------------------------------------
    def _accumulate(self, n: dict, x: np.ndarray) -> tuple[np.ndarray, tuple | None]:
        """``(acc [M, N], conv output size or None)``: integers for binary layers on spikes."""
        d = self.domain[n["inputs"][0]]
        conv = n["op"] == "conv2d"
        if self.mode == "packed" and n["binary"] and d:
            q = x.astype(np.uint8) if d == 1 else np.rint(x * d).astype(np.uint8)
            planes = np.stack([(q >> b) & 1 for b in range(int(d).bit_length())]) if d > 1 else q[None]
            flat = planes.reshape(len(planes), len(x), -1)
            acc = binary_gemm(pack_rows(flat, padded_k(flat.shape[-1])), self._weight_words(n), self.kernel)
            return (acc if d == 1 else acc.astype(np.float32) / np.float32(d)), None
        if conv:
            cols, size = ops.im2col(x, n["kernel"], n["stride"], n["padding"])
            return cols @ self.dense_weight(n), size
        return x.reshape(len(x), -1) @ self.dense_weight(n), None

    def _real(self, key: str) -> np.ndarray | None:
        """A real tensor; for one with a row per time step (``[S, N]``), this step's row."""
        v = self._t.get(key)
        return v[min(self.step_index, len(v) - 1)] if v is not None and v.ndim == 2 else v

    def _weight_layer(self, n: dict, x: np.ndarray) -> np.ndarray:
        scale, bias = self._real(n["name"] + ".scale"), self._real(n["name"] + ".bias")
        d = self.domain[n["inputs"][0]]
        if self.mode == "packed" and n["binary"] and d and n["op"] == "conv2d":
            words = pack_pixels(x, d, n["padding"], self.kernel)
            return binary_conv(words, self._weight_words(n), n["kernel"], n["stride"], scale, bias, d, self.kernel)
        acc, size = self._accumulate(n, x)
        y = ops.epilogue(acc, scale, bias)
        if size is None:
            return y
        return np.ascontiguousarray(y.reshape(len(x), *size, -1).transpose(0, 3, 1, 2))

    def _node(self, n: dict, x: np.ndarray, y: np.ndarray | None) -> np.ndarray:
        op = n["op"]
        if op in ("linear", "conv2d"):
            return self._weight_layer(n, x)
        if op == "lif":
            v = self.state.get(n["name"])
            s, self.state[n["name"]] = ops.lif_step(n, np.zeros_like(x) if v is None else v, x)
            return s
        if op == "affine":
            return ops.channel_fma(x, self._real(n["name"] + ".scale"), self._real(n["name"] + ".bias"))
        if op == "avgpool2d":
            return ops.avgpool2d(x, n["kernel"], n["stride"], n["padding"], n["ceil_mode"], n["count_include_pad"])
        if op == "maxpool2d":
            return ops.maxpool2d(x, n["kernel"], n["stride"], n["padding"])
        if op == "global_avgpool":
            return ops.global_avgpool(x)
        if op == "flatten":
            return x.reshape(len(x), -1)
        if op == "add":
            return x + y
        if op == "mean":
            return (x + y) / np.float32(2)
        raise ValueError(f"unknown op {op!r}")

    # -- running -------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.state = {}
        self.step_index = 0

    def step(self, x: np.ndarray, record: dict | None = None) -> np.ndarray:
        """One time step on ``x [B, *input_shape]``; ``record`` (a dict) collects every node's output."""
        values = {"input": np.ascontiguousarray(x, dtype=np.float32)}
        for i, n in enumerate(self.nodes):
            ins = [values[s] for s in n["inputs"]]
            out = self._node(n, ins[0], ins[1] if len(ins) > 1 else None)
            for s in n["inputs"]:
                if self._last_use[s] == i and s != self.desc["output"]:
                    values.pop(s, None)
            values[n["name"]] = out
            if record is not None:
                record.setdefault(n["name"], []).append(out)
        self.step_index += 1
        return values[self.desc["output"]]

    def check_input(self, x: np.ndarray) -> np.ndarray:
        """``x`` as float32 ``[B, *input_shape]`` (``[B, T, *input_shape]`` when temporal); a single
        sample without the batch axis gets one; ``ValueError`` for another shape or a non-numeric dtype."""
        x = np.asarray(x)
        want = (self.time_steps, *self.input_shape) if self.temporal else self.input_shape
        if x.shape[1:] != tuple(want):
            if x.shape == tuple(want):
                x = x[None]
            else:
                raise ValueError(f"input of shape {x.shape}; the model takes [B, {', '.join(map(str, want))}]")
        if x.dtype.kind not in "fiub":
            raise ValueError(f"input of dtype {x.dtype}; expected numbers")
        return x.astype(np.float32, copy=False)

    def run(self, x: np.ndarray, record: dict | None = None) -> np.ndarray:
        """Logits summed over the T steps for a batch ``x``, from a fresh state."""
        x = self.check_input(x)
        self.reset()
        total = None
        with blas_single_thread(self.kernel) if self.mode == "packed" else contextlib.nullcontext():
            for t in range(self.time_steps):
                out = self.step(x[:, t] if self.temporal else x, record)
                total = out.copy() if total is None else total + out
        self.reset()
        return total

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted class indices ``[B]``: the argmax of :meth:`run`'s logits."""
        return self.run(x).argmax(-1)
