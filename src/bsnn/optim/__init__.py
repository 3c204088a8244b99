"""Optimizers for binary weights, in the shape of ``torch.optim``."""
from .bso import BSO, TBSO, bso_update
from .nonfinite import skip_step, track_skipped_steps
from .schedule import FlipScheduler

__all__ = ["BSO", "TBSO", "bso_update", "FlipScheduler", "skip_step", "track_skipped_steps"]
