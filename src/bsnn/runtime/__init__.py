"""Torch-free inference of packed ``.bsnn`` files: numpy (+ safetensors to read; numba optional).

``bsnn.runtime.load("model.bsnn").run(x)`` returns the logits summed over the model's T steps; the
file format is documented in ``bsnn.runtime.format``. Nothing here imports torch.
"""
from .format import FORMAT, VERSION, FormatError, pack_signs, read, unpack_signs
from .model import PackedModel, load
from .popcount import binary_gemm, kernel

__all__ = ["FORMAT", "VERSION", "FormatError", "PackedModel", "load", "read", "pack_signs", "unpack_signs",
           "binary_gemm", "kernel"]
