"""A bit-accurate model summary in the spirit of Larq's ``models.summary``.

Per weight layer / neuron: kind, output shape, binary and real parameter counts, bits and bytes; totals
with binary weights at 1 bit and everything else at 32 bits (the papers' convention), BN buffers listed
separately; compression versus float32. A short forward pass of T steps adds the firing rate of every
spiking layer and synaptic operations per sample:

* **AC** (accumulate): a weight layer whose input is binary spikes {0, 1} or whose weight is ±1 only adds
  or subtracts; an event-driven implementation skips zero inputs, so ACs are counted exactly as
  ``sum over nonzero inputs of their fan-out``.
* **MAC** (multiply-accumulate): real weight on a non-binary input (e.g. the first layer on pixels),
  counted densely.

Energy uses 45 nm CMOS figures (Horowitz, ISSCC 2014, 32-bit float): MAC 4.6 pJ, AC 0.9 pJ — the
convention of most SNN papers. Only synaptic operations are counted (no memory access, no BN/neuron).

SpikingJelly's ``op_counter`` counts at the level of aten operations (with a host sync per operation);
the summary counts per weight layer, which is what its table reports, with one forward pass of hooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import base, functional
from torch import nn

from ..nn.binary import BinaryParameter, is_binary
from ..nn.trace import TraceRouted
from .firing import FiringRateMeter, is_neuron
from .params import count_parameters, size_bits

__all__ = ["LayerRow", "Summary", "summary", "E_MAC_PJ", "E_AC_PJ"]

E_MAC_PJ = 4.6
E_AC_PJ = 0.9


class _Bits:
    @property
    def bits(self) -> int:
        """Size in bits: binary weights at 1 bit, real parameters at 32 bits (buffers excluded)."""
        return size_bits(self.binary_params, self.real_params)


@dataclass
class LayerRow(_Bits):
    """One listed layer of a :class:`Summary`: parameter counts, output shape, firing rate, ACs and MACs."""
    name: str
    kind: str
    output_shape: tuple = ()
    binary_params: int = 0
    real_params: int = 0
    buffers: int = 0
    firing_rate: float | None = None
    acs: float = 0.0            # per sample, all T steps
    macs: float = 0.0

    @property
    def bytes(self) -> float:
        """:attr:`bits` in bytes."""
        return self.bits / 8


@dataclass
class Summary(_Bits):
    """A model summary: one :class:`LayerRow` per listed layer, with the totals below."""
    rows: list[LayerRow]
    time_steps: int
    other_params: int = 0       # parameters not owned by any listed layer
    extra: dict = field(default_factory=dict)

    @property
    def binary_params(self) -> int:
        """Binary (1-bit) weights of all listed layers."""
        return sum(r.binary_params for r in self.rows)

    @property
    def real_params(self) -> int:
        """Real parameters, those outside the listed layers included."""
        return sum(r.real_params for r in self.rows) + self.other_params

    @property
    def buffers(self) -> int:
        """Floating buffer values (BatchNorm running statistics) of the listed layers."""
        return sum(r.buffers for r in self.rows)

    @property
    def megabytes(self) -> float:
        """:attr:`bits` in megabytes (10^6 bytes)."""
        return self.bits / 8e6

    @property
    def megabytes_with_buffers(self) -> float:
        """Megabytes with the buffers added at 32 bits."""
        return (self.bits + size_bits(0, self.buffers)) / 8e6

    @property
    def float32_megabytes(self) -> float:
        """Megabytes of the same parameters all in float32."""
        return size_bits(0, self.binary_params + self.real_params) / 8e6

    @property
    def acs(self) -> float:
        """Accumulate operations per sample over all T steps."""
        return sum(r.acs for r in self.rows)

    @property
    def macs(self) -> float:
        """Multiply-accumulate operations per sample over all T steps."""
        return sum(r.macs for r in self.rows)

    @property
    def energy_uj(self) -> float:
        """Synaptic energy per sample in µJ (``E_AC_PJ`` per AC, ``E_MAC_PJ`` per MAC)."""
        return (self.acs * E_AC_PJ + self.macs * E_MAC_PJ) * 1e-6

    def table(self) -> str:
        """The summary as a plain-text table: one line per layer, then totals for size, operations and energy."""
        head = f"{'layer':28s} {'kind':22s} {'output':>18s} {'binary':>10s} {'real':>9s} {'bits':>11s} " \
               f"{'fire':>6s} {'ACs/sample':>12s} {'MACs/sample':>12s}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            fr = "" if r.firing_rate is None else f"{r.firing_rate:.3f}"
            shape = "x".join(map(str, r.output_shape))
            lines.append(f"{r.name[:28]:28s} {r.kind[:22]:22s} {shape:>18s} {r.binary_params:>10,} "
                         f"{r.real_params:>9,} {r.bits:>11,} {fr:>6s} {r.acs:>12,.0f} {r.macs:>12,.0f}")
        lines.append("-" * len(head))
        lines += [
            f"parameters: {self.binary_params:,} binary (1 bit) + {self.real_params:,} real (32 bit)"
            + (f" [{self.other_params:,} outside listed layers]" if self.other_params else ""),
            f"size: {self.megabytes:.2f} MB (binary at 1 bit, real at 32 bit); "
            f"{self.megabytes_with_buffers:.2f} MB with {self.buffers:,} BN buffer values at 32 bit; "
            f"float32 network {self.float32_megabytes:.2f} MB; compression {self.float32_megabytes / max(self.megabytes, 1e-12):.1f}x",
            f"synaptic operations per sample over T={self.time_steps}: {self.acs:,.0f} AC + {self.macs:,.0f} MAC; "
            f"energy {self.energy_uj:.3f} uJ (AC {E_AC_PJ} pJ, MAC {E_MAC_PJ} pJ; Horowitz 2014, 45 nm)",
        ]
        return "\n".join(lines)


def _weight_layer(m: nn.Module) -> nn.Module | None:
    if isinstance(m, TraceRouted):
        return m.layer
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        return m
    return None


def _is_spike(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _acs(layer: nn.Module, x: torch.Tensor) -> float:
    """Exact count of (nonzero input, weight) pairs = additions an event-driven layer performs."""
    nz = (x != 0).to(torch.float32)
    if isinstance(layer, nn.Linear):
        return float(nz.sum()) * layer.out_features
    ones = torch.ones(1, layer.in_channels // layer.groups, *layer.kernel_size, device=x.device)
    if layer.groups == 1:
        per_out = F.conv2d(nz, ones, None, layer.stride, layer.padding, layer.dilation)
        return float(per_out.sum()) * layer.out_channels
    per_group = nz.unflatten(1, (layer.groups, -1)).transpose(0, 1)
    return sum(float(F.conv2d(g, ones, None, layer.stride, layer.padding, layer.dilation).sum())
               for g in per_group) * (layer.out_channels // layer.groups)


def _macs(layer: nn.Module, y: torch.Tensor) -> float:
    if isinstance(layer, nn.Linear):
        return float(y.numel()) * layer.in_features
    k = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
    return float(y.numel()) * k


def _own_counts(m: nn.Module) -> tuple[int, int, int]:
    """(binary, real incl. a binarizer's derived scales and per-step BatchNorm values, buffers) of one
    listed layer (``count_parameters``)."""
    c = count_parameters(m.layer if isinstance(m, TraceRouted) else m)
    return c.binary, c.real + c.scales + c.step_stats, c.buffers


@torch.no_grad()
def summary(model: nn.Module, input_shape: tuple[int, ...] | None = None, time_steps: int = 1,
            x: torch.Tensor | None = None, batch_size: int = 8, temporal: bool = False) -> Summary:
    """Summarise ``model``. Give ``x`` (a real batch: [B, ...], or [B, T, ...] with ``temporal=True``)
    for meaningful firing rates; otherwise a random batch of ``input_shape`` (uniform [0, 1)) is used.
    Multi-step models ([T, B, ...]) run in one call; single-step models step T times."""
    from ..train.method import frame, sequence

    if x is None:
        if input_shape is None:
            raise ValueError("give input_shape or x")
        param = next(model.parameters(), None)
        x = torch.rand(batch_size, *input_shape, device=param.device if param is not None else None)
    rows: dict[str, LayerRow] = {}
    order: list[str] = []
    listed: set[int] = set()
    hooks = []

    def register(name: str, m: nn.Module, kind: str):
        b, r, buf = _own_counts(m)
        rows[name] = LayerRow(name, kind, binary_params=b, real_params=r, buffers=buf)
        order.append(name)
        listed.update(id(p) for p in (m.layer.parameters() if isinstance(m, TraceRouted)
                                      else m.parameters(recurse=False)))

    n_samples = x.shape[0]
    meter = FiringRateMeter(model)

    for name, m in model.named_modules():
        if isinstance(m, TraceRouted) or (isinstance(m, (nn.Conv2d, nn.Linear))
                                          and not _inside_routed(model, name)):
            lyr = _weight_layer(m)
            kind = ("binary " if is_binary(lyr.weight) else
                    "latent-binary " if isinstance(lyr.weight, BinaryParameter) else "") + type(lyr).__name__
            register(name, m, kind)

            def hook(mod, inp, out, name=name, lyr=lyr):
                xin = inp[0]
                row = rows[name]
                row.output_shape = tuple(out.shape[1:])
                if isinstance(lyr.weight, BinaryParameter) or _is_spike(xin):
                    row.acs += _acs(lyr, xin) / n_samples
                else:
                    row.macs += _macs(lyr, out) / n_samples
            hooks.append(m.register_forward_hook(hook))
        elif is_neuron(m):
            register(name, m, type(m).__name__)

            def nhook(mod, inp, out, name=name):
                rows[name].output_shape = tuple(out.shape[2:] if mod.step_mode == "m" else out.shape[1:])
            hooks.append(m.register_forward_hook(nhook))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) or (
                isinstance(m, base.MemoryModule) and next(m.parameters(recurse=False), None) is not None):
            register(name, m, type(m).__name__)                 # BatchNorm, AGMM's gate

            def bhook(mod, inp, out, name=name):
                multi = getattr(mod, "step_mode", "s") == "m"
                rows[name].output_shape = tuple(out.shape[2:] if multi else out.shape[1:])
            hooks.append(m.register_forward_hook(bhook))
    was_training = model.training
    model.eval()
    try:
        functional.reset_net(model)
        with meter.record():
            if getattr(model, "step_mode", "s") == "m":
                model(sequence(x, time_steps, temporal))
            else:
                for t in range(time_steps):
                    model(frame(x, t, temporal))
        functional.reset_net(model)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for name, rate in meter.rates(prefix="").items():
        rows[name].firing_rate = rate
    other = sum(p.numel() for p in model.parameters() if id(p) not in listed)
    return Summary([rows[n] for n in order], time_steps, other_params=other)


def _inside_routed(model: nn.Module, name: str) -> bool:
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return isinstance(model.get_submodule(parent), TraceRouted) if parent else False
