"""Spiking neurons.

``OnlineLIFNode`` is the single-step LIF of online training (Liang et al., ICML 2025): soft reset, membrane and
reset detached (so backpropagation never leaves the current time step) and a presynaptic trace kept
without grad. SpikingJelly's ``OTTTLIFNode`` has the OTTT trace only and returns a list; BSO also
needs the NDOT adaptive trace and a tensor output that layers in between (pooling, flatten) can carry,
so this neuron is our own, built on SpikingJelly's ``MemoryModule`` so that
``spikingjelly.activation_based.functional.reset_net`` resets it.

In training mode the neuron returns ``torch.cat([spike, trace])`` along the batch axis: the value path
and the gradient path travel together through pooling and flatten to a :class:`bsnn.nn.TraceRouted`
layer, which splits them again (see ``trace.py``). In eval mode it returns spikes only.

``multistep_lif`` builds SpikingJelly's multi-step ``LIFNode`` with the same dynamics for BPTT (its
fused multi-step kernels are why BPTT keeps SpikingJelly's neuron). The dynamics are written once, in
the functional core :func:`lif_step` (as Norse's ``lif_feed_forward_step``): the online neuron runs it,
and the tests check that SpikingJelly's neuron, stepped through time, is the same function.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import base, neuron, surrogate

__all__ = ["OnlineLIFNode", "multistep_lif", "lif_step", "TRACES"]

TRACES = ("ottt", "ndot", "ndot_code")


def _safe_ratio(num: torch.Tensor, den: torch.Tensor, fill: float) -> torch.Tensor:
    r = num / den
    return torch.where(torch.isfinite(r) & (den != 0), r, torch.full_like(r, fill))


def lif_step(x: torch.Tensor, v: torch.Tensor, *, tau: float, v_threshold: float,
             surrogate_function: surrogate.SurrogateFunctionBase, v_reset: float | None = None,
             online: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One LIF step without input decay (``decay_input=False``, the BSO/NDOT convention): returns
    ``(spikes, next membrane)``::

        h  = v · (1 − 1/τ) + x                 (``v_reset`` r: v − (v − r)/τ + x)
        s  = Θ(h − V_th)                      (``surrogate_function``'s gradient in backward)
        v' = h − V_th · s    (soft reset, ``v_reset=None``)  or  h · (1 − s) + r · s   (hard)

    The reset uses ``s`` detached (SpikingJelly's ``detach_reset=True``). ``online=True``: ``v`` enters
    detached and ``v'`` leaves detached, so backpropagation never leaves the time step (online training).
    """
    if online:
        v = v.detach()
    h = v * (1.0 - 1.0 / tau) + x if v_reset is None else v - (v - v_reset) / tau + x
    s = surrogate_function(h - v_threshold)
    sd = s.detach()
    v_next = h - v_threshold * sd if v_reset is None else h * (1.0 - sd) + v_reset * sd
    return s, (v_next.detach() if online else v_next)


class OnlineLIFNode(base.MemoryModule):
    """Single-step LIF for online training with a presynaptic trace.

    Dynamics per step (tau, Vth; ``decay_input=False`` as in the BSO/NDOT code)::

        h = v.detach() * (1 - 1/tau) + x          # charge
        s = Heaviside(h - Vth)                    # surrogate gradient in backward
        v = h - Vth * s.detach()                  # soft, detached reset

    Traces (``trace=``):

    * ``"ottt"``: ``a[t] = lam * a[t-1] + s[t]``, ``lam = 1 - 1/tau`` (OTTT; BSO Algorithm 1).
    * ``"ndot"``: ``a[t] = mu[t] * a[t-1] + s[t]`` with ``mu[t] = v[t] / v[t-1]`` (post-reset potentials,
      i.e. the NDOT paper's ``(u[t]-Vth s[t]) / (u[t-1]-Vth s[t-1])``), clamped to ``[-lam, lam]``.
    * ``"ndot_code"``: the NDOT/BSO reference code, which subtracts ``Vth*s`` from the post-reset
      potentials once more: ``mu = (v[t]-Vth s[t]) / (v[t-1]-Vth s[t-1])``, same clamp.

    In both NDOT forms a zero, NaN or infinite ratio becomes ``lam`` (the code's ``safe_div``).
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 1.0,
                 surrogate_function: surrogate.SurrogateFunctionBase | None = None,
                 trace: str = "ottt", emit_trace: bool = True):
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        if not 1.0 < tau < float("inf"):
            raise ValueError(f"tau must be > 1 and finite, got {tau}")
        if not 0.0 < v_threshold < float("inf"):
            raise ValueError(f"v_threshold must be > 0 and finite, got {v_threshold}")
        self.tau = float(tau)
        self.v_threshold = float(v_threshold)
        self.surrogate_function = surrogate_function or surrogate.Sigmoid(alpha=4.0)
        self.trace_kind = trace
        self.emit_trace = emit_trace
        self.register_memory("v", 0.0)
        self.register_memory("s", None)      # last spikes (for the NDOT code form)
        self.register_memory("trace", None)

    def supported_step_mode(self):
        return ("s",)

    @property
    def decay(self) -> float:
        """The membrane decay ``1 − 1/τ`` per step."""
        return 1.0 - 1.0 / self.tau

    def extra_repr(self) -> str:
        return (f"tau={self.tau}, v_threshold={self.v_threshold}, trace={self.trace_kind}, "
                f"emit_trace={self.emit_trace}, {super().extra_repr()}")

    def single_step_forward(self, x: torch.Tensor) -> torch.Tensor:
        v_old = self.v
        if not isinstance(v_old, torch.Tensor):
            v_old = torch.full_like(x, float(v_old))
        s, v_new = lif_step(x, v_old, tau=self.tau, v_threshold=self.v_threshold,
                            surrogate_function=self.surrogate_function, online=True)
        if self.training and self.emit_trace:
            self._update_trace(s.detach(), v_old.detach(), v_new)
        self.v = v_new
        if self.training and self.emit_trace:
            return torch.cat([s, self.trace])
        return s

    @torch.no_grad()
    def _update_trace(self, s: torch.Tensor, v_old: torch.Tensor, v_new: torch.Tensor) -> None:
        prev = self.trace
        if prev is None:                      # first step of a sample: a[0] = s[0]
            self.trace = s.clone()
        elif self.trace_kind == "ottt":
            self.trace = prev * self.decay + s
        else:
            if self.trace_kind == "ndot":
                num, den = v_new, v_old
            else:
                s_prev = self.s if isinstance(self.s, torch.Tensor) else torch.zeros_like(s)
                num, den = v_new - self.v_threshold * s, v_old - self.v_threshold * s_prev
            mu = _safe_ratio(num, den, self.decay).clamp_(-self.decay, self.decay)
            self.trace = prev * mu + s
        if self.trace_kind == "ndot_code":
            self.s = s


def multistep_lif(tau: float = 2.0, v_threshold: float = 1.0,
                  surrogate_function: surrogate.SurrogateFunctionBase | None = None,
                  soft_reset: bool = True, detach_reset: bool = True) -> neuron.LIFNode:
    """SpikingJelly's multi-step LIF (fastest backend it dispatches to) with the online neuron's dynamics."""
    return neuron.LIFNode(
        tau=tau, decay_input=False, v_threshold=v_threshold,
        v_reset=None if soft_reset else 0.0,
        surrogate_function=surrogate_function or surrogate.Sigmoid(alpha=4.0),
        detach_reset=detach_reset, step_mode="m",
    )
