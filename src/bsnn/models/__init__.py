"""Model registry and architectures."""
from . import qkformer, resnet, sei_resnet, small, vgg  # noqa: F401  (registers models)
from .registry import create, list_models, model_signature, register_model

__all__ = ["create", "list_models", "model_signature", "register_model"]
