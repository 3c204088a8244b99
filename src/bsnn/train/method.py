"""What every training method shares: T, the input layout, the per-step loss, a teacher, AMP, prediction.

A method trains one batch (``train_batch``) and gives each time step's logits for one (``step_logits``;
``predict`` sums them over the T members). ``OnlineMethod`` and ``BPTTMethod`` differ only in how the
T steps are unrolled.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from ..optim import BSO, skip_step
from .losses import StepLoss

__all__ = ["Method", "frame", "sequence", "optimizer_step", "frozen_batchnorm_stats"]


def frame(x: torch.Tensor, t: int, temporal: bool) -> torch.Tensor:
    """Input of time step t: the static sample (direct coding) or frame t of a [B, T, ...] sequence."""
    return x[:, t] if temporal else x


def sequence(x: torch.Tensor, T: int, temporal: bool) -> torch.Tensor:
    """[T, B, ...] input: the static sample repeated (direct coding) or the [B, T, ...] frames transposed."""
    return x.transpose(0, 1) if temporal else x.unsqueeze(0).expand(T, *x.shape)


def optimizer_step(optimizer, t: int, scaler=None) -> None:
    """Step, unless a gradient is not finite: GradScaler skips those steps itself, BSO/T-BSO check
    and count them in ``step``, and other optimizers are checked here (``bsnn.optim.skip_step``)."""
    kwargs = {"t": t} if isinstance(optimizer, BSO) else {}
    if scaler is not None:
        scaler.step(optimizer, **kwargs)
        scaler.update()
    elif isinstance(optimizer, BSO) or not skip_step(optimizer):
        optimizer.step(**kwargs)


@contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """Run training-mode forwards without changing any BatchNorm running statistics."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in bns]
    counts = [getattr(m, "_batches", None) for m in bns]        # StepBatchNorm's host copy of the count
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs, count in zip(bns, saved, counts):
                for b, s in zip(m.buffers(recurse=False), bufs):
                    b.copy_(s)
                if count is not None:
                    m._batches = count


class Method:
    """A way of unrolling T time steps for training (``train_batch``) and prediction (``step_logits``)."""
    name = "method"
    step_mode = "s"

    def __init__(self, time_steps: int, *, temporal: bool = False, criterion: StepLoss | None = None,
                 teacher=None, amp_dtype: torch.dtype | None = None, loss_lambda: float | None = None):
        """``loss_lambda`` is a shorthand for ``criterion=StepLoss(loss_lambda)``."""
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        if loss_lambda is not None:
            if criterion is not None:
                raise ValueError("give loss_lambda or criterion, not both")
            criterion = StepLoss(loss_lambda)
        self.T, self.temporal, self.amp_dtype = time_steps, temporal, amp_dtype
        self.criterion = criterion if criterion is not None else StepLoss()
        self.teacher = teacher          # needed for training with soft/hard distillation, not for predict

    @property
    def loss_lambda(self) -> float:
        """The weight of the spike-count (MSE) term in ``StepLoss``."""
        return self.criterion.loss_lambda

    def _autocast(self, x: torch.Tensor):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=self.amp_dtype)

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.criterion.needs_teacher:
            return None
        if self.teacher is None:
            raise ValueError(f"distill={self.criterion.distill!r} needs a teacher to train")
        return self.teacher(x)

    def train_batch(self, model, x, y, optimizer, scaler=None):
        """Returns (loss, summed logits over T) as detached tensors."""
        raise NotImplementedError

    def step_logits(self, model, x) -> torch.Tensor:
        """``[T, B, classes]``: each time step's logits (float32), no grad, from a fresh state."""
        raise NotImplementedError

    def predict(self, model, x) -> torch.Tensor:
        """Sum over T of the members' logits, no grad."""
        return self.step_logits(model, x).sum(0)
