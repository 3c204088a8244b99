"""Model registry in the spirit of timm's ``register_model`` / ``create_model``."""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from torch import nn

from ..errors import did_you_mean

__all__ = ["register_model", "create", "list_models", "model_signature"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Register a factory under ``name``. A factory that takes ``**kit`` (``LayerKit`` options) gets the
    kit's whole-model options applied to what it returns (``LayerKit.finish``), however it is called."""
    def deco(fn: Callable[..., nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        sig = inspect.signature(fn)
        kit_name = next((p.name for p in sig.parameters.values() if p.kind is p.VAR_KEYWORD), None)
        if kit_name:
            @functools.wraps(fn)
            def build(*args, **kwargs):
                from .layers import LayerKit

                model = fn(*args, **kwargs)
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                kit = dict(bound.arguments.get(kit_name, {}))
                if "method" in bound.arguments:
                    kit["method"] = bound.arguments["method"]
                return LayerKit(**kit).finish(model)
        _MODELS[name] = build if kit_name else fn
        return _MODELS[name]
    return deco


def list_models() -> list[str]:
    """The names of all registered models, sorted."""
    return sorted(_MODELS)


def model_signature(name: str) -> inspect.Signature:
    """The signature of the factory of ``name``: the options that ``create`` accepts."""
    return inspect.signature(_get(name))


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}{did_you_mean(name, _MODELS)}; known: {', '.join(list_models())}")
    return _MODELS[name]


def create(name: str, **kwargs) -> nn.Module:
    """Build a registered model: ``bsnn.models.create("convnet", method="online", num_classes=10)``."""
    return _get(name)(**kwargs)
