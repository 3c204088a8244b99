"""BatchNorm with running statistics per time step and shared affine parameters (BNTT: Kim & Panda,
"Revisiting Batch Normalization for Training Low-latency Deep Spiking Neural Networks from Scratch",
Front. Neurosci. 2021, keeps a separate γ per step too; here only the statistics are per step, so the
model's parameters and size do not change).

One set of running statistics fits no time step when the input's statistics change over time (speech
whose word sits in the first segments, event streams that start quietly, deep layers at t = 0 where
membranes start empty): the eval-mode network then sees other activations than it was trained on.
:class:`StepBatchNorm` keeps ``running_mean``/``running_var`` of shape ``[T, C]``:

* single-step mode (online training): a step counter (SpikingJelly memory, so ``functional.reset_net``
  restarts it at 0) picks row ``t``;
* multi-step mode (BPTT): ``[T, B, C, ...]`` is normalised step by step.

Each row sees one batch per T steps where a shared set sees T, so the running averages start as a
cumulative average (factor ``max(momentum, 1/batches)``, as BatchNorm with ``momentum=None`` does)
and are exponential from ``1/momentum`` batches on. Steps beyond the ``T`` rows use the last row. Loading a state dict with other statistics fills the
rows: a shared ``[C]`` set goes to every step; ``[T', C]`` with fewer steps (a T=1 → T=4 phase change)
repeats the last known step; with more steps, the first ``T`` are kept.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import base
from torch import nn

__all__ = ["StepBatchNorm", "per_step_batchnorm", "BN_STATS"]

BN_STATS = ("auto", "shared", "per_step")      # auto: per_step for online training, shared for BPTT


class StepBatchNorm(nn.modules.batchnorm._BatchNorm, base.MemoryModule):
    """Drop-in for ``nn.BatchNorm1d/2d/3d`` with statistics per time step (see the module docstring)."""

    def __init__(self, num_features: int, time_steps: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, device=None, dtype=None, step_mode: str = "s"):
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        super().__init__(num_features, eps, momentum, affine, True, device, dtype)
        self.running_mean = self.running_mean.repeat(time_steps, 1)
        self.running_var = self.running_var.repeat(time_steps, 1)
        self.step_mode = step_mode
        self._batches = 0
        self.register_memory("t", 0)

    @property
    def time_steps(self) -> int:
        """Rows of running statistics (steps beyond use the last)."""
        return self.running_mean.shape[0]

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, time_steps={self.time_steps}, step_mode={self.step_mode}"

    def _normalise(self, x: torch.Tensor, t: int) -> torch.Tensor:
        row = min(t, self.time_steps - 1)
        factor = 0.0
        if self.training:
            if t == 0:
                self.num_batches_tracked.add_(1)
                self._batches += 1              # a host copy of the count: no device sync per step
            # cumulative average until it is as fast as the momentum: each row sees one batch per T steps
            n = max(self._batches, 1)
            factor = 1.0 / n if self.momentum is None else max(self.momentum, 1.0 / n)
        return F.batch_norm(x, self.running_mean[row], self.running_var[row], self.weight, self.bias,
                            self.training, factor, self.eps)

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        y = self._normalise(x, self.t)
        self.t = self.t + 1
        return y

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x_seq[0])
        return torch.stack([self._normalise(x, t) for t, x in enumerate(x_seq)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return base.MemoryModule.forward(self, x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("running_mean", "running_var"):
            saved = state_dict.get(prefix + name)
            if isinstance(saved, torch.Tensor) and saved.shape[-1:] == (self.num_features,) and saved.dim() <= 2:
                rows = saved.reshape(-1, self.num_features)[:self.time_steps]
                fill = rows[-1:].expand(self.time_steps - len(rows), -1)
                state_dict[prefix + name] = torch.cat([rows, fill])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._batches = int(self.num_batches_tracked)


def per_step_batchnorm(model: nn.Module, time_steps: int, step_mode: str | None = None) -> nn.Module:
    """Replace every BatchNorm of ``model`` by a :class:`StepBatchNorm` with ``time_steps`` rows of
    statistics (each a copy of its running statistics), keeping its affine parameters (the same
    ``Parameter`` objects) and options. ``step_mode`` defaults to the parent's (``"s"`` where there is
    none)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, StepBatchNorm):
            if not child.track_running_stats:
                continue
            mode = step_mode or getattr(model, "step_mode", "s")
            bn = StepBatchNorm(child.num_features, time_steps, child.eps, child.momentum, child.affine,
                               device=child.running_mean.device, dtype=child.running_mean.dtype, step_mode=mode)
            if child.affine:
                bn.weight, bn.bias = child.weight, child.bias
            bn.load_state_dict({k: v for k, v in child.state_dict().items() if k not in ("weight", "bias")},
                               strict=False)          # its statistics go to every step
            setattr(model, name, bn)
        else:
            per_step_batchnorm(child, time_steps, step_mode or getattr(child, "step_mode", None))
    return model
