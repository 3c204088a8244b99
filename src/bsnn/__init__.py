"""bsnn: binary spiking neural networks in PyTorch.

``bsnn.evaluate(model, loader, method)`` and ``bsnn.predict(model, x, method)`` (from ``bsnn.train``)
are loaded on first use, so ``import bsnn.runtime`` needs no torch.
"""
__version__ = "0.1.0"

_LAZY = {"evaluate": "bsnn.train.evaluate", "predict": "bsnn.train.evaluate", "Evaluation": "bsnn.train.evaluate"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bsnn' has no attribute {name!r}")
