"""Online training of one batch (BSO spec §3.2): T single-step forwards, loss/T each, backward each.

``mode="realtime"``: the optimizer steps after every time step with the time-step index (BSO/T-BSO).
``mode="accumulated"``: gradients add up over T and the optimizer steps once (index 0).
Only one time step's graph exists at any moment, so memory does not depend on T.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from spikingjelly.activation_based import functional

from ..optim import BSO
from .losses import spike_loss

__all__ = ["OnlineMethod", "frame"]


def frame(x: torch.Tensor, t: int, temporal: bool) -> torch.Tensor:
    """Input of time step t: the static sample (direct coding) or frame t of a [B, T, ...] sequence."""
    return x[:, t] if temporal else x


def optimizer_step(optimizer, t: int, scaler=None) -> None:
    kwargs = {"t": t} if isinstance(optimizer, BSO) else {}
    if scaler is not None:
        scaler.step(optimizer, **kwargs)
        scaler.update()
    else:
        optimizer.step(**kwargs)


class OnlineMethod:
    name = "online"
    step_mode = "s"

    def __init__(self, time_steps: int, mode: str = "realtime", loss_lambda: float = 0.0,
                 temporal: bool = False, amp_dtype: torch.dtype | None = None):
        if mode not in ("realtime", "accumulated"):
            raise ValueError(f"mode must be 'realtime' or 'accumulated', got {mode!r}")
        self.T, self.mode, self.loss_lambda, self.temporal = time_steps, mode, loss_lambda, temporal
        self.amp_dtype = amp_dtype

    def _autocast(self, x: torch.Tensor):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(x.device.type, dtype=self.amp_dtype)

    def train_batch(self, model, x, y, optimizer, scaler=None):
        """Returns (summed loss, summed outputs) as detached tensors."""
        functional.reset_net(model)
        realtime = self.mode == "realtime"
        optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=x.device)
        out_sum = None
        for t in range(self.T):
            # DDP: all-reduce only where the optimizer steps (every step, or the last of T)
            skip_sync = not realtime and t < self.T - 1 and hasattr(model, "no_sync")
            with model.no_sync() if skip_sync else nullcontext():
                with self._autocast(x):
                    out = model(frame(x, t, self.temporal))
                    loss = spike_loss(out.float(), y, self.loss_lambda) / self.T
                (scaler.scale(loss) if scaler is not None else loss).backward()
            if realtime:
                optimizer_step(optimizer, t, scaler)
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach()
            out_sum = out.detach().float() if out_sum is None else out_sum + out.detach().float()
        if not realtime:
            optimizer_step(optimizer, 0, scaler)
        return loss_sum, out_sum

    @torch.no_grad()
    def predict(self, model, x):
        functional.reset_net(model)
        out_sum = None
        for t in range(self.T):
            with self._autocast(x):
                out = model(frame(x, t, self.temporal)).float()
            out_sum = out if out_sum is None else out_sum + out
        return out_sum
