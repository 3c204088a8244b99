"""Training: per-batch methods (online, BPTT), the epoch loop, checkpoints and run building."""
from .bptt import BPTTMethod
from .build import build_data, build_model, build_optimizer, build_trainer
from .losses import spike_loss
from .online import OnlineMethod
from .trainer import Trainer

__all__ = ["BPTTMethod", "OnlineMethod", "Trainer", "spike_loss", "build_data", "build_model",
           "build_optimizer", "build_trainer"]
