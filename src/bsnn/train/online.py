"""Online training of one batch (BSO, Liang et al. ICML 2025, Algorithm 1): T single-step forwards,
loss/T each, backward each.

``mode="realtime"``: the optimizer steps after every time step with the time-step index (BSO/T-BSO).
``mode="accumulated"``: gradients add up over T and the optimizer steps once (index 0).
Only one time step's graph exists at any moment, so memory does not depend on T.

Self-distillation needs the ensemble's mean output before member t is trained: it comes from a
no-grad pre-pass over the T steps (training mode, BatchNorm statistics left untouched), which costs T
extra forward steps per batch and no memory that grows with T.
"""
from __future__ import annotations

import weakref
from contextlib import nullcontext

import torch
from spikingjelly.activation_based import functional

from ..nn.trace import routing_check
from .losses import logits
from .method import Method, frame, frozen_batchnorm_stats, optimizer_step

__all__ = ["OnlineMethod"]


class OnlineMethod(Method):
    """Online training: T single-step forwards and backwards per batch (see the module docstring)."""
    name = "online"
    step_mode = "s"

    def __init__(self, time_steps: int, mode: str = "realtime", *, temporal: bool = False, criterion=None,
                 teacher=None, amp_dtype: torch.dtype | None = None, loss_lambda: float | None = None):
        if mode not in ("realtime", "accumulated"):
            raise ValueError(f"mode must be 'realtime' or 'accumulated', got {mode!r}")
        super().__init__(time_steps, temporal=temporal, criterion=criterion, teacher=teacher, amp_dtype=amp_dtype,
                         loss_lambda=loss_lambda)
        self.mode = mode
        self._checked: weakref.WeakSet = weakref.WeakSet()       # models whose trace routing was checked

    @torch.no_grad()
    def _ensemble_mean(self, model, x) -> torch.Tensor:
        with frozen_batchnorm_stats(model):
            functional.reset_net(model)
            total = 0
            for t in range(self.T):
                with self._autocast(x):
                    total = total + logits(model(frame(x, t, self.temporal))).float()
        return total / self.T

    def train_batch(self, model, x, y, optimizer, scaler=None):
        """T forward/backward steps (and optimizer steps in ``realtime`` mode); returns (loss, summed logits)."""
        teacher = self._ensemble_mean(model, x) if self.criterion.needs_ensemble else self._teacher_logits(x)
        functional.reset_net(model)
        realtime = self.mode == "realtime"
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=x.device)
        out_sum = None
        for t in range(self.T):
            # DDP: all-reduce only where the optimizer steps (every step, or the last of T)
            skip_sync = not realtime and t < self.T - 1 and hasattr(model, "no_sync")
            check = routing_check(model) if t == 0 and model not in self._checked else nullcontext()
            with model.no_sync() if skip_sync else nullcontext(), check:
                with self._autocast(x):
                    out = model(frame(x, t, self.temporal))
                    loss = self.criterion(out, y, teacher) / self.T
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if realtime:
                optimizer_step(optimizer, t, scaler)
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            o = logits(out).detach().float()
            out_sum = o if out_sum is None else out_sum + o
        if not realtime:
            optimizer_step(optimizer, 0, scaler)
        self._checked.add(model)
        return loss_sum, out_sum

    @torch.no_grad()
    def step_logits(self, model, x):
        """``[T, B, classes]`` from T single-step forwards."""
        functional.reset_net(model)
        outs = []
        for t in range(self.T):
            with self._autocast(x):
                outs.append(logits(model(frame(x, t, self.temporal))).float())
        return torch.stack(outs)
