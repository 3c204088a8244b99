"""Training: per-batch methods (online, BPTT), the epoch loop, checkpoints and run building."""
from .bptt import BPTTMethod
from .build import build_data, build_model, build_optimizer, build_trainer
from .distill import Teacher, load_teacher
from .evaluate import Evaluation, evaluate, predict
from .losses import StepLoss, spike_loss
from .method import Method
from .online import OnlineMethod
from .trainer import Trainer

__all__ = ["Evaluation", "evaluate", "predict", "Method", "BPTTMethod", "OnlineMethod", "Trainer", "StepLoss", "Teacher", "load_teacher", "spike_loss", "build_data", "build_model",
           "build_optimizer", "build_trainer"]
