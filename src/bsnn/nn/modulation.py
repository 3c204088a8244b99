"""AGMM (Liang et al., AAAI 2025) gradient modulation, as reconstructed in ``docs/methods.md`` ("AGMM").

The paper's equations could not be recovered; a secondary summary describes "forward gating with a
time-dependent factor α[t] and a sigmoid modulation σ(E(X[t]))". This module implements that reading
with every open choice as a switch, so the real equation can be expressed once it is known:

    m[t] = α[t] · σ(E(x[t]))        y[t] = m[t] ⊙ x[t]

* ``statistic`` (E): ``"channel_mean"`` (spatial mean per sample and channel, default), ``"sample_mean"``
  (one value per sample), ``"step_mean"`` (one value per time step: batch mean too), ``"se"`` (a learnable
  squeeze-excitation MLP on the channel means).
* ``alpha``: ``"layer_t"`` (one α per time step, default) or ``"layer_t_channel"`` (per step and channel);
  ``learnable`` (default) or fixed; initial value ``alpha_init``; clamped to ``(0, alpha_max]``.
* ``detach`` (default True): no gradient through E, so each step's gradient is a pure rescaling by m[t].
* ``mode``: ``"forward"`` (the gate changes the forward value, default) or ``"backward"`` (the forward is
  unchanged; only the gradient is scaled by m[t]).

Where it sits (after BN — default — or before BN) is decided by the model (``LayerKit``). It is a
SpikingJelly memory module: it counts time steps in single-step mode (reset by ``reset_net``) and takes
``[T, B, ...]`` in multi-step mode. Past ``time_steps`` the last α is reused.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import base
from torch import nn

__all__ = ["AGMM", "STATISTICS", "ALPHAS"]

STATISTICS = ("channel_mean", "sample_mean", "step_mean", "se")
ALPHAS = ("layer_t", "layer_t_channel")


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, m):
        ctx.save_for_backward(m)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        (m,) = ctx.saved_tensors
        return g * m, None


class AGMM(base.MemoryModule):
    """The AGMM gate (reconstruction; see the module docstring for the equation and its switches)."""
    def __init__(self, channels: int, time_steps: int, statistic: str = "channel_mean", alpha: str = "layer_t",
                 learnable: bool = True, alpha_init: float = 1.0, alpha_max: float = 1.0, detach: bool = True,
                 mode: str = "forward", se_reduction: int = 4, step_mode: str = "s"):
        super().__init__()
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        if alpha not in ALPHAS:
            raise ValueError(f"alpha must be one of {ALPHAS}, got {alpha!r}")
        if mode not in ("forward", "backward"):
            raise ValueError(f"mode must be 'forward' or 'backward', got {mode!r}")
        if not 0 < alpha_init <= alpha_max:
            raise ValueError("need 0 < alpha_init <= alpha_max")
        self.statistic, self.alpha_kind, self.detach, self.mode = statistic, alpha, detach, mode
        self.alpha_max = alpha_max
        shape = (time_steps, channels) if alpha == "layer_t_channel" else (time_steps,)
        a = torch.full(shape, float(alpha_init))
        if learnable:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)
        self.se = (nn.Sequential(nn.Linear(channels, max(channels // se_reduction, 1)), nn.ReLU(),
                                 nn.Linear(max(channels // se_reduction, 1), channels))
                   if statistic == "se" else None)
        self.register_memory("t", 0)
        self.step_mode = step_mode

    def supported_step_mode(self):
        return ("s", "m")

    def extra_repr(self) -> str:
        return (f"statistic={self.statistic}, alpha={self.alpha_kind}{tuple(self.alpha.shape)}, "
                f"detach={self.detach}, mode={self.mode}, {super().extra_repr()}")

    def _stat(self, x: torch.Tensor, batch_dims: int) -> torch.Tensor:
        """E(x): keeps the leading ``batch_dims`` dims (B, or T and B) and, where relevant, channels."""
        spatial = tuple(range(batch_dims + 1, x.dim()))
        if self.statistic in ("channel_mean", "se"):
            e = x.mean(spatial, keepdim=True) if spatial else x
            if self.se is not None:
                c = self.se(e.flatten(batch_dims))
                e = c.view(e.shape)
            return e
        if self.statistic == "sample_mean":
            return x.mean(tuple(range(batch_dims, x.dim())), keepdim=True)
        return x.mean(tuple(range(batch_dims - 1, x.dim())), keepdim=True)   # over batch and features

    def _alpha(self, t_index, x: torch.Tensor, batch_dims: int) -> torch.Tensor:
        a = self.alpha.clamp(1e-3, self.alpha_max)[t_index]
        # broadcast: [T?] or [T?, C] -> x's layout
        if self.alpha_kind == "layer_t_channel":
            a = a.view(*a.shape[:-1], *([1] * (batch_dims - (a.dim() - 1))), a.shape[-1],
                       *([1] * (x.dim() - batch_dims - 1)))
        else:
            a = a.view(*a.shape, *([1] * (x.dim() - a.dim())))
        return a

    def _gate(self, x: torch.Tensor, t_index, batch_dims: int) -> torch.Tensor:
        e = self._stat(x, batch_dims)
        if self.detach:
            e = e.detach()
        m = self._alpha(t_index, x, batch_dims) * torch.sigmoid(e)
        if self.mode == "forward":
            return m * x
        return _ScaleGrad.apply(x, m.detach())         # value x, gradient m * dL/dy

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        t = min(int(self.t), self.alpha.shape[0] - 1)
        self.t = self.t + 1
        return self._gate(x, t, 1)

    def multi_step_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        T = x_seq.shape[0]
        idx = torch.arange(T, device=x_seq.device).clamp(max=self.alpha.shape[0] - 1)
        return self._gate(x_seq, idx, 2)
