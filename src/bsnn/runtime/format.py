"""The packed model file (``.bsnn``), version 1: a safetensors file with 1-bit weights and a JSON graph.

Container: safetensors (8-byte little-endian header length, a JSON header, raw little-endian tensors).
Its ``__metadata__`` (a string -> string map) holds three keys:

* ``"format"``: ``"bsnn-packed"``;  ``"format_version"``: ``"1"``, or ``"2"`` when a ``scale``/``bias``
  has a row per time step (below);
* ``"bsnn"``: a compact JSON object, the model description below.

**Binary weights** (a layer whose attribute ``binary`` is true) are stored as ``<node>.weight``: a
``uint8`` tensor of shape ``[N, K_pad / 8]``, one row per output unit / channel, where

* ``K`` is the fan-in, ordered as ``F.unfold`` orders a patch: ``k = (c · kh + i) · kw + j`` for input
  channel ``c`` and kernel offset ``(i, j)`` (a conv weight ``[N, C, kh, kw]`` flattened row-major); a
  linear layer's ``K`` is its input feature index;
* ``K_pad = 64 · ceil(K / 64)``: every row is padded with 0 bits to a whole number of 64-bit words;
* bit ``k`` of a row is bit ``k mod 8`` (least significant first, numpy's ``bitorder="little"``) of
  byte ``k // 8``; read as little-endian ``uint64`` words, it is bit ``k mod 64`` of word ``k // 64``;
* **bit 1 means +1, bit 0 means −1**; padding bits are 0 and never count: a binary layer on spikes
  computes ``y = 2·popcount(s AND w⁺) − popcount(s)`` with the input's padding bits also 0.

**Real tensors** (``<node>.weight`` of a full-precision layer, ``<node>.scale``, ``<node>.bias``) are
float32, or float16 when exported with ``real_dtype="float16"`` (the runtime computes in float32).
Version 2: a ``scale`` or ``bias`` may be ``[S, N]`` instead of ``[N]`` (BatchNorm statistics per time
step): step t uses row ``min(t, S − 1)``.

**Model description** (``"bsnn"`` JSON)::

    {"time_steps": T, "input_shape": [C, H, W] or [F], "temporal": bool,
     "class_names": [...] or null, "real_dtype": "float32" | "float16",
     "bit_order": "little", "word_bits": 64, "plus_one": 1,
     "summary_bits": int,          # binary params at 1 bit + real params at 32 bit (bsnn summary)
     "source": {...},              # free: model name, method, checkpoint epoch
     "output": node name,
     "nodes": [{"name": str, "op": str, "inputs": [node names; "input" is the model input], ...}]}

Nodes run in list order once per time step (single-step; tensors are ``[B, ...]``, channels first):

===================  =========================================================================================
op                   fields and semantics
===================  =========================================================================================
``linear``           ``in_features, out_features, binary``; tensors ``weight``, optional ``scale [N]``,
                     ``bias [N]``.  ``acc = x @ W^T``; ``y = fma(acc, scale, bias)`` when a scale exists
                     (one float32 rounding, as PyTorch's vectorised BatchNorm), else ``acc + bias``
``conv2d``           ``in_channels, out_channels, kernel [kh, kw], stride [2], padding [2]`` (zero padding,
                     dilation 1, groups 1); same tensors and epilogue as ``linear``
``affine``           ``channels``; tensors ``scale, bias``: ``y = fma(x, scale, bias)`` along axis 1
                     (a BatchNorm that does not directly follow a layer, running statistics folded in)
``lif``              ``tau, v_threshold, v_reset`` (null: soft reset ``v = h − V_th·s``; a number: hard reset
                     ``v = v_reset`` where ``s``), ``decay_input``, ``charge``: ``"decay"`` (bsnn's online
                     neuron: ``h = v·(1 − 1/τ) + x``) or ``"spikingjelly"`` (``h = v − (v − v_r)/τ + x``, or
                     ``v + (x − (v − v_r))/τ`` with ``decay_input``; ``v_r`` = v_reset or 0);
                     ``s = (h >= V_th)``; ``v`` starts at 0
``avgpool2d``        ``kernel, stride, padding, ceil_mode, count_include_pad`` (PyTorch's ``avg_pool2d``)
``maxpool2d``        ``kernel, stride, padding``
``global_avgpool``   mean over H and W, keeping ``[B, C, 1, 1]`` (``AdaptiveAvgPool2d(1)``)
``flatten``          ``[B, ...] -> [B, -1]``
``add``              sum of its two inputs
``mean``             ``(a + b) / 2`` of its two inputs (a distillation head's evaluation output)
===================  =========================================================================================

The output node's value is summed over the T steps (bsnn's prediction); the input of step t is the
sample itself (direct coding) or frame t of a ``[B, T, ...]`` sample when ``temporal``.

This module needs numpy and safetensors only (no torch).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["FORMAT", "VERSION", "WORD_BITS", "FormatError", "pack_signs", "unpack_signs", "padded_k",
           "read", "OPS", "tensor_keys"]

FORMAT = "bsnn-packed"
VERSION = 2                 # written when a file needs it (per-step rows); 1 otherwise
VERSIONS = (1, 2)           # read
WORD_BITS = 64

OPS = ("linear", "conv2d", "affine", "lif", "avgpool2d", "maxpool2d", "global_avgpool", "flatten", "add", "mean")
_WEIGHT_OPS = ("linear", "conv2d")


class FormatError(ValueError):
    """The file is not a readable bsnn packed model (foreign, corrupted or of an unknown version)."""


def padded_k(k: int) -> int:
    """``k`` rounded up to a whole number of ``WORD_BITS``-bit words."""
    return WORD_BITS * math.ceil(k / WORD_BITS)


def pack_signs(w: np.ndarray) -> np.ndarray:
    """``w``: ``[N, ...]`` of ±1 (any numeric dtype) -> ``uint8 [N, K_pad/8]``, bit 1 = +1, LSB first."""
    w = np.asarray(w).reshape(len(w), -1)
    bits = np.zeros((w.shape[0], padded_k(w.shape[1])), np.uint8)
    bits[:, :w.shape[1]] = w > 0
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_signs(packed: np.ndarray, k: int, dtype=np.float32) -> np.ndarray:
    """Inverse of :func:`pack_signs`: ``[N, K]`` of ±1 in ``dtype``."""
    bits = np.unpackbits(packed, axis=1, count=k, bitorder="little")
    return (bits.astype(dtype) * 2 - 1).astype(dtype)


def tensor_keys(node: dict) -> dict[str, bool]:
    """Tensor suffixes a node may own -> whether each is required."""
    if node["op"] in _WEIGHT_OPS:
        return {"weight": True, "scale": False, "bias": False}
    if node["op"] == "affine":
        return {"scale": True, "bias": True}
    return {}


def _fail(path, why: str):
    raise FormatError(f"{path} is not a bsnn packed model ({why})")


_ATTRS = {       # op -> (positive ints, [h, w] pairs >= 1, [h, w] pairs >= 0, booleans)
    "linear": (("in_features", "out_features"), (), (), ("binary",)),
    "conv2d": (("in_channels", "out_channels"), ("kernel", "stride"), ("padding",), ("binary",)),
    "affine": (("channels",), (), (), ()),
    "lif": ((), (), (), ("decay_input",)),
    "avgpool2d": ((), ("kernel", "stride"), ("padding",), ("ceil_mode", "count_include_pad")),
    "maxpool2d": ((), ("kernel", "stride"), ("padding",), ()),
}


def _is_int(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_attrs(path, node: dict) -> None:
    ints, pairs1, pairs0, flags = _ATTRS.get(node["op"], ((), (), (), ()))
    bad = [k for k in ints if not _is_int(node.get(k), 1)]
    bad += [k for k in pairs1 if not (isinstance(node.get(k), list) and len(node[k]) == 2
                                      and all(_is_int(v, 1) for v in node[k]))]
    bad += [k for k in pairs0 if not (isinstance(node.get(k), list) and len(node[k]) == 2
                                      and all(_is_int(v, 0) for v in node[k]))]
    bad += [k for k in flags if not isinstance(node.get(k), bool)]
    if node["op"] == "lif":
        num = (int, float)
        if not (isinstance(node.get("tau"), num) and node["tau"] > 1 and isinstance(node.get("v_threshold"), num)
                and (node.get("v_reset") is None or isinstance(node.get("v_reset"), num))
                and node.get("charge") in ("decay", "spikingjelly")):
            bad.append("tau/v_threshold/v_reset/charge")
    if bad:
        _fail(path, f"node {node['name']} ({node['op']}) has bad or missing {', '.join(bad)}")


def _check_node(path, node: dict, seen: set, tensors: dict, version: int = VERSION) -> None:
    name, op = node.get("name"), node.get("op")
    if not isinstance(name, str) or not name or op not in OPS:
        _fail(path, f"bad node {name!r} with op {op!r}")
    inputs = node.get("inputs")
    n_in = 2 if op in ("add", "mean") else 1
    if not isinstance(inputs, list) or len(inputs) != n_in or any(i not in seen for i in inputs):
        _fail(path, f"node {name} has inputs {inputs!r}; each must name an earlier node or 'input'")
    _check_attrs(path, node)
    for key, required in tensor_keys(node).items():
        t = tensors.get(f"{name}.{key}")
        if t is None:
            if required:
                _fail(path, f"tensor {name}.{key} is missing")
            continue
        if op in _WEIGHT_OPS:
            n = node["out_features"] if op == "linear" else node["out_channels"]
            k = node["in_features"] if op == "linear" else node["in_channels"] * math.prod(node["kernel"])
        else:
            n, k = node["channels"], None
        if key == "weight":
            want = (n, padded_k(k) // 8) if node["binary"] else \
                ((n, k) if op == "linear" else (n, node["in_channels"], *node["kernel"]))
            dtype_ok = t.dtype == np.uint8 if node["binary"] else t.dtype.kind == "f"
        else:
            per_step = version >= 2 and t.ndim == 2 and t.shape[0] >= 1
            want, dtype_ok = ((t.shape[0], n) if per_step else (n,)), t.dtype.kind == "f"
        if tuple(t.shape) != tuple(want) or not dtype_ok:
            _fail(path, f"tensor {name}.{key} has shape {tuple(t.shape)} {t.dtype}, expected {tuple(want)}")


def read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate a packed model: ``(description, tensors)``; :class:`FormatError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no model file at {path}")
    try:
        from safetensors import safe_open
    except ImportError:
        raise FormatError("reading .bsnn files needs the safetensors package (pip install 'bsnn[export]')") from None
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for foreign or truncated files
        _fail(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}")
    if meta.get("format") != FORMAT:
        _fail(path, "no bsnn-packed format tag")
    if meta.get("format_version") not in [str(v) for v in VERSIONS]:
        _fail(path, f"format version {meta.get('format_version')!r}; this runtime reads versions "
                    f"{', '.join(map(str, VERSIONS))}")
    version = int(meta["format_version"])
    try:
        desc = json.loads(meta["bsnn"])
        nodes, output = desc["nodes"], desc["output"]
        T, shape = int(desc["time_steps"]), [int(d) for d in desc["input_shape"]]
    except Exception as e:
        _fail(path, f"bad model description: {type(e).__name__}: {e}")
    if T < 1 or not shape or min(shape) < 1:
        _fail(path, f"time_steps {T} and input_shape {shape} must be positive")
    names = desc.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(c, str) for c in names)):
        _fail(path, "class_names is not a list of strings")
    if not isinstance(nodes, list) or not nodes:
        _fail(path, "no node list")
    seen = {"input"}
    for node in nodes:
        if not isinstance(node, dict):
            _fail(path, "a node is not an object")
        _check_node(path, node, seen, tensors, version)
        if node["name"] in seen:
            _fail(path, f"node name {node['name']!r} used twice")
        seen.add(node["name"])
    if output not in seen or output == "input":
        _fail(path, f"output {output!r} is not a node")
    return desc, tensors
