"""Memory accounting for one training batch.

* ``saved_bytes``: the largest total size of tensors saved for backward by one graph (autograd
  saved-tensor hooks; counted from pack until the graph's ``backward``). This is the activation memory
  that BPTT keeps for all T and online training for one time step.
* ``persistent_bytes``: parameters + gradients + optimizer state (what lives across batches).
* ``peak``: CUDA max allocated on GPU; the process peak RSS on CPU (``ru_maxrss``, which never goes
  down, so measure each setting in its own process — ``benchmarks/memory_vs_T.py`` does).
"""
from __future__ import annotations

import resource
import sys
from contextlib import contextmanager

import torch

from ..nn.binary import is_binary

__all__ = ["SavedTensorMeter", "persistent_bytes", "peak_rss_bytes", "tensor_bytes"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of a tensor's elements (``numel * element_size``)."""
    return t.numel() * t.element_size()


class SavedTensorMeter:
    """Counts bytes saved for backward; ``peak`` is the largest amount alive in one graph."""

    def __init__(self):
        self.current = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _pack(self, t: torch.Tensor):
        key = id(t)
        # A parameter saved by several ops is stored once; count each distinct tensor once per graph.
        if key not in self._seen:
            self._seen.add(key)
            self.current += tensor_bytes(t)
            self.peak = max(self.peak, self.current)
        return t

    def graph_freed(self) -> None:
        """Mark the current graph as freed: the next saved tensor starts a new count."""
        self.current = 0
        self._seen.clear()

    @contextmanager
    def measure(self):
        """Within the block every ``Tensor.backward`` frees its graph (as training does)."""
        orig = torch.Tensor.backward
        meter = self

        def backward(self, *a, **k):
            orig(self, *a, **k)
            meter.graph_freed()

        torch.Tensor.backward = backward
        try:
            with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
                yield self
        finally:
            torch.Tensor.backward = orig


def persistent_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Parameters + gradients + optimizer state. ``persistent_bytes_packed`` counts exact ±1 weights at
    1 bit (their packed storage; bsnn computes with them as float32): the saving BSO makes possible."""
    params = sum(tensor_bytes(p) for p in model.parameters())
    packed = sum(-(-p.numel() // 8) if is_binary(p) else tensor_bytes(p) for p in model.parameters())
    grads = sum(tensor_bytes(p) for p in model.parameters())        # one gradient per parameter
    state = 0
    for st in optimizer.state.values():
        state += sum(tensor_bytes(v) for v in st.values() if isinstance(v, torch.Tensor))
    return {"param_bytes": params, "grad_bytes": grads, "optimizer_state_bytes": state,
            "persistent_bytes": params + grads + state, "persistent_bytes_packed": packed + grads + state}


def peak_rss_bytes() -> int:
    """Peak resident set size of this process in bytes (``ru_maxrss``; never decreases)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024
