"""One place that decides which neuron and weight layers a model gets for a training method.

* ``"online"``: single-step ``OnlineLIFNode``; binary layers hold ±1 (``BinaryConv2d``/``BinaryLinear``)
  and every layer that receives spikes is ``TraceRouted`` (weight gradient on the presynaptic trace).
  ``trace="none"`` drops the trace: the weight gradient uses the spikes of the same step only (SLTT's
  spatial-only gradient, Meng et al. ICCV 2023), and layers are not wrapped.
* ``"bptt"``: SpikingJelly's multi-step LIF; binary layers are latent-weight (``LatentBinary*``) with the
  chosen binarizer.

``binary=False`` gives the full-precision network of the same shape (FP-SNN / OTTT baselines).
``agmm`` (a dict of ``bsnn.nn.AGMM`` options plus ``where``) adds AGMM to every binary layer.
``bn_stats="per_step"`` gives every BatchNorm running statistics per time step (``bsnn.nn.StepBatchNorm``);
``"auto"`` (default) does so for online training.
Model factories take these options as keyword arguments (``**kit``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from spikingjelly.activation_based import surrogate
from torch import nn

from ..nn import (
    BinaryConv2d,
    BinaryLinear,
    LatentBinaryConv2d,
    LatentBinaryLinear,
    OnlineLIFNode,
    SpikingSequential,
    TraceRouted,
    multistep_lif,
)
from ..nn.batchnorm import BN_STATS, per_step_batchnorm
from ..nn.binarize import BINARIZERS, make_binarizer
from ..nn.modulation import AGMM
from ..nn.neuron import TRACES

__all__ = ["LayerKit", "METHODS", "SURROGATES", "AGMM_WHERE", "kit_fields"]

METHODS = ("online", "bptt")
SURROGATES = ("sigmoid", "triangle")
AGMM_WHERE = ("bn_out", "conv_out")


@dataclass
class LayerKit:
    """The neuron and weight layers a model gets for a training method (see the module docstring);
    checks its options when built."""
    method: str = "online"
    binary: bool = True
    tau: float = 2.0
    v_threshold: float = 1.0
    surrogate: str = "sigmoid"          # sigmoid (alpha = surrogate_alpha) or triangle (width 1/alpha)
    surrogate_alpha: float = 4.0
    soft_reset: bool = True             # BPTT neurons only; the online neuron always resets softly
    trace: str = "ottt"                 # online: ottt | ndot | ndot_code | none (SLTT: no trace)
    binarizer: str = "sign_ste"         # latent-weight layers (BPTT)
    time_steps: int = 4                 # length of AGMM's alpha
    agmm: dict | None = field(default=None)
    bn_stats: str = "auto"              # BatchNorm running statistics: shared over T, per_step, or auto:
                                        # per_step online (docs/methods.md, "BatchNorm statistics")

    def __post_init__(self):
        for name, value, allowed in (("method", self.method, METHODS), ("trace", self.trace, (*TRACES, "none")),
                                     ("surrogate", self.surrogate, SURROGATES),
                                     ("binarizer", self.binarizer, tuple(BINARIZERS)),
                                     ("bn_stats", self.bn_stats, BN_STATS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name, ok, what in (("tau", self.tau > 1.0, "> 1"), ("v_threshold", self.v_threshold > 0, "> 0"),
                               ("surrogate_alpha", self.surrogate_alpha > 0, "> 0"),
                               ("time_steps", self.time_steps >= 1, ">= 1")):
            value = getattr(self, name)
            if not ok or not math.isfinite(value):         # `not ok` also catches NaN
                raise ValueError(f"{name} must be {what} and finite, got {value!r}")
        if self.method == "online" and not self.soft_reset:
            raise ValueError("the online neuron resets softly (soft_reset=False is for method=bptt)")
        if self.agmm is not None:
            where = self.agmm.get("where", "bn_out")
            if where not in AGMM_WHERE:
                raise ValueError(f"agmm.where must be one of {AGMM_WHERE}, got {where!r}")
            AGMM(1, 1, **self._agmm_options())           # validates the other options early

    @property
    def step_mode(self) -> str:
        """SpikingJelly step mode of the method's layers: ``"s"`` (online) or ``"m"`` (BPTT)."""
        return "s" if self.method == "online" else "m"

    def _surrogate(self):
        if self.surrogate == "triangle":          # SpikingJelly's PiecewiseQuadratic is the triangle
            return surrogate.PiecewiseQuadratic(alpha=self.surrogate_alpha)
        return surrogate.Sigmoid(alpha=self.surrogate_alpha)

    @property
    def routes_traces(self) -> bool:
        """Whether layers that receive spikes are ``TraceRouted`` (online training with a trace)."""
        return self.method == "online" and self.trace != "none"

    def neuron(self, v_threshold: float | None = None, emit_trace: bool = True) -> nn.Module:
        """The method's LIF. ``emit_trace=False`` (online): spikes only, for a neuron whose output feeds
        something other than a weight layer (attention products, sums); layers after it take
        ``routed=False``."""
        vth = self.v_threshold if v_threshold is None else v_threshold
        if self.method == "online":
            trace = "ottt" if self.trace == "none" else self.trace
            return OnlineLIFNode(self.tau, vth, self._surrogate(), trace=trace,
                                 emit_trace=emit_trace and self.routes_traces)
        return multistep_lif(self.tau, vth, self._surrogate(), soft_reset=self.soft_reset)

    def spike_input(self, layer: nn.Module, routed: bool = True) -> nn.Module:
        """Wrap a layer that receives spikes (trace routing in online mode, unless ``routed=False``)."""
        return TraceRouted(layer) if routed and self.routes_traces else layer

    def _binary(self, binary: bool | None) -> bool:
        return self.binary if binary is None else binary

    def conv(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1, *,
             binary: bool | None = None, routed: bool = True, bias: bool = False) -> nn.Module:
        """A conv that receives spikes: binary unless ``binary=False`` (default: the kit's ``binary``)."""
        if not self._binary(binary):
            layer = nn.Conv2d(cin, cout, k, stride, padding, bias=bias)
        elif self.method == "online":
            layer = BinaryConv2d(cin, cout, k, stride, padding, bias=bias)
        else:
            layer = LatentBinaryConv2d(cin, cout, k, stride, padding, bias=bias,
                                       binarizer=make_binarizer(self.binarizer))
        return self.spike_input(layer, routed)

    def linear(self, fin: int, fout: int, *, binary: bool | None = None, routed: bool = True,
               bias: bool = False) -> nn.Module:
        """A linear layer that receives spikes: binary unless ``binary=False``."""
        if not self._binary(binary):
            layer = nn.Linear(fin, fout, bias=bias)
        elif self.method == "online":
            layer = BinaryLinear(fin, fout, bias=bias)
        else:
            layer = LatentBinaryLinear(fin, fout, bias=bias, binarizer=make_binarizer(self.binarizer))
        return self.spike_input(layer, routed)

    def _agmm_options(self) -> dict:
        return {k: v for k, v in (self.agmm or {}).items() if k != "where"}

    def norm(self, channels: int, dims: int = 2) -> nn.Module:
        """BatchNorm after a hidden (binary) layer, with AGMM after or before it when enabled."""
        bn = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
        if self.agmm is None:
            return bn
        gate = AGMM(channels, self.time_steps, step_mode=self.step_mode, **self._agmm_options())
        pair = (bn, gate) if self.agmm.get("where", "bn_out") == "bn_out" else (gate, bn)
        return SpikingSequential(*pair, step_mode=self.step_mode)


    @property
    def per_step_bn(self) -> bool:
        """Online training normalises each step by its own batch statistics, so its running statistics
        must be per step to match (``auto``, for T > 1); BPTT normalises over all T steps at once, as
        shared statistics do."""
        return self.bn_stats == "per_step" or (self.bn_stats == "auto" and self.method == "online"
                                               and self.time_steps > 1)

    def finish(self, model: nn.Module) -> nn.Module:
        """What applies to a whole built model: per-step BatchNorm statistics (``per_step_bn``)."""
        if self.per_step_bn:
            per_step_batchnorm(model, self.time_steps, self.step_mode)
        return model


def kit_fields() -> dict:
    """Option name -> default, for config validation of the ``**kit`` keyword arguments."""
    return {f.name: f.default for f in fields(LayerKit) if f.name not in ("method",)}
