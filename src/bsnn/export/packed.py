"""Write the packed 1-bit model file (format: ``bsnn.runtime.format``, version 1).

``save_packed(model, path, time_steps, input_shape)`` lowers the model (``lower.py``), packs every
binary weight to 1 bit, stores real tensors in float32 (or float16) and writes one safetensors file
atomically (a temporary file renamed over the target). Its size is the model's summary size (binary
weights at 1 bit, real parameters at 32 bit) give or take: BatchNorm's two parameters per channel
become the folded ``scale``/``bias`` pair (the same count), a full-precision layer's own bias folds
into ``bias`` (one value per channel fewer), a binarizer's per-channel scale adds one value per channel,
rows of binary weights are padded to 64 bits, and a JSON header of a few KB describes the graph.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from ..measure.params import count_parameters
from ..runtime.format import FORMAT, VERSION, WORD_BITS, pack_signs
from .lower import Graph, lower
from ..train.checkpoint import atomic_write_bytes

__all__ = ["save_packed", "packed_bytes", "packed_tensors", "in_memory", "node_shapes", "REAL_DTYPES"]

REAL_DTYPES = {"float32": np.float32, "float16": np.float16}


def description(graph: Graph, time_steps: int, input_shape, temporal: bool = False, class_names=None,
                real_dtype: str = "float32", summary_bits: int | None = None, source: dict | None = None) -> dict:
    """The JSON header of a packed file: run metadata (time steps, input shape, class names, real dtype,
    bit layout, summary size, source) and the graph's nodes and output."""
    if int(time_steps) < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
    return {"time_steps": int(time_steps), "input_shape": [int(d) for d in input_shape], "temporal": bool(temporal),
            "class_names": class_names, "real_dtype": real_dtype, "bit_order": "little",
            "word_bits": WORD_BITS, "plus_one": 1, "summary_bits": summary_bits, "source": source or {},
            "output": graph.output, "nodes": graph.nodes}


def packed_tensors(graph: Graph, real_dtype: str = "float32") -> dict[str, np.ndarray]:
    """The file's tensors: binary weights packed to 1 bit, real tensors in ``real_dtype``."""
    binary = {f"{n['name']}.weight" for n in graph.nodes if n.get("binary")}
    return {k: pack_signs(v) if k in binary else np.ascontiguousarray(v, dtype=REAL_DTYPES[real_dtype])
            for k, v in graph.tensors.items()}


def in_memory(graph: Graph, time_steps: int, input_shape, temporal: bool = False, mode: str = "reference"):
    """The runtime's model of a lowered graph, without writing a file."""
    from ..runtime.model import PackedModel

    return PackedModel(description(graph, time_steps, input_shape, temporal), packed_tensors(graph), mode)


def node_shapes(graph: Graph, input_shape) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every node, from one step of the runtime on zeros."""
    record: dict = {}
    in_memory(graph, 1, input_shape).step(np.zeros((1, *input_shape), np.float32), record)
    return {"input": tuple(input_shape), **{k: v[0].shape[1:] for k, v in record.items()}}


def packed_bytes(graph: Graph, desc: dict, real_dtype: str = "float32") -> bytes:
    """The file's bytes for a lowered graph and its description."""
    if real_dtype not in REAL_DTYPES:
        raise ValueError(f"real_dtype must be one of {tuple(REAL_DTYPES)}, got {real_dtype!r}")
    from safetensors.numpy import save

    tensors = packed_tensors(graph, real_dtype)
    per_step = any(v.ndim == 2 for k, v in graph.tensors.items() if k.endswith((".scale", ".bias")))
    meta = {"format": FORMAT, "format_version": str(VERSION if per_step else 1),
            "bsnn": json.dumps(desc, separators=(",", ":"))}
    return save(tensors, metadata=meta)


def save_packed(model: nn.Module, path: str | Path, time_steps: int, input_shape, class_names=None,
                real_dtype: str = "float32", temporal: bool = False, source: dict | None = None) -> dict:
    """Write ``model`` as a packed ``.bsnn`` file; returns ``{"path", "bytes", "summary_bits"}``.

    ``input_shape``: one sample without batch (and without T for ``temporal`` data, whose samples are
    ``[T, *input_shape]``). Raises ``UnsupportedModel`` (a ``ValueError``) for what the format cannot hold.
    """
    if real_dtype not in REAL_DTYPES:
        raise ValueError(f"real_dtype must be one of {tuple(REAL_DTYPES)}, got {real_dtype!r}")
    graph = lower(model)
    bits = count_parameters(model).bits
    desc = description(graph, time_steps, input_shape, temporal, class_names, real_dtype, bits, source)
    data = packed_bytes(graph, desc, real_dtype)
    path = Path(path)
    atomic_write_bytes(data, path)
    return {"path": str(path), "bytes": len(data), "summary_bits": bits}
