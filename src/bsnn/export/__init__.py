"""Deployment writers: the packed 1-bit file (safetensors + JSON graph), NIR and an ONNX time step.

All start from one lowered graph (``lower.py``); the packed format is documented in
``bsnn.runtime.format`` and run without torch by ``bsnn.runtime``.
"""
from .lower import Graph, UnsupportedModel, fold_batchnorm, lower
from .packed import REAL_DTYPES, save_packed

__all__ = ["Graph", "UnsupportedModel", "fold_batchnorm", "lower", "save_packed", "REAL_DTYPES"]
