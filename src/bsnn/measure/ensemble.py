"""An SNN as a self-ensemble of binary networks (the view of SEI-BWSNN: Meng et al., "A Self-Ensemble
Inspired Approach for Effective Training of Binary-Weight Spiking Neural Networks", arXiv 2508.12609).

A feedforward SNN run for T time steps is T weight-tied binary-activation networks, its *members*: at
step t every LIF layer fires ``s[t] = Θ(I[t] + ξ[t] − V_th)``, where ``I[t]`` is this step's input
current and ``ξ[t]`` the leaked membrane residue of earlier steps, an input-dependent noise
(``ξ[0] = 0``, so member 0 is the clean network). The SNN's output, the mean over t of the members'
outputs ``o[t]``, is the ensemble's prediction.

:func:`ensemble` measures this on a data set: each member's accuracy, the ensemble's, how the ensemble
grows with t, how often two members agree, and per spiking layer the size of ``ξ / V_th`` and the firing
rate per step. ξ is the neuron's charge with zero input, from its membrane value before the step:

* ``OnlineLIFNode``: ``ξ = v · (1 − 1/τ)``;
* SpikingJelly ``LIFNode`` (either ``decay_input``; ``v_reset=None`` counts as 0): ``ξ = v − (v − v_reset)/τ``;
* SpikingJelly ``IFNode``: ``ξ = v``.

Other neuron types are listed in :attr:`EnsembleReport.skipped`.
"""
from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
from spikingjelly.activation_based import base, functional, neuron
from torch import nn

from ..nn import OnlineLIFNode, set_step_mode
from .firing import is_neuron

__all__ = ["EnsembleReport", "LayerNoise", "ensemble", "residue"]


def residue(m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """ξ as a function of the membrane value before the step, or None for an unknown neuron type."""
    t = type(m)
    if t is OnlineLIFNode:
        return lambda v: v * m.decay
    if t in (neuron.LIFNode, neuron.OTTTLIFNode, neuron.SLTTLIFNode):
        v_reset = 0.0 if m.v_reset is None else m.v_reset
        return lambda v: v - (v - v_reset) / m.tau
    if t is neuron.IFNode:
        return lambda v: v
    return None


@dataclass
class LayerNoise:
    """One spiking layer: ξ/V_th over all neurons, samples and steps t ≥ 1 (None when T = 1), per step."""
    name: str
    kind: str
    xi_mean: float | None
    xi_std: float | None
    xi_step: list[float]            # mean ξ/V_th at each t (t = 0 is 0)
    firing_rate: list[float]        # spikes / neuron at each t


@dataclass
class EnsembleReport:
    """What :func:`ensemble` measured: member, cumulative and ensemble accuracies, pairwise agreement
    (``[T, T]``) and the noise ξ and firing rate of every spiking layer."""
    time_steps: int
    samples: int
    member_acc: list[float]         # accuracy of argmax o[t] alone
    ensemble_acc: float             # accuracy of argmax mean_t o[t] (the SNN's prediction)
    cumulative_acc: list[float]     # accuracy of the mean of members 0..t
    agreement: list[list[float]]    # fraction of samples on which members i and j predict the same class
    layers: list[LayerNoise] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # "name (Type)": neurons whose ξ is not known

    def to_dict(self) -> dict:
        """The report as plain nested dicts and lists (JSON-ready)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleReport":
        """Rebuild a report from :meth:`to_dict`'s output."""
        d = dict(d)
        d["layers"] = [LayerNoise(**x) for x in d.get("layers", [])]
        return cls(**d)

    def table(self) -> str:
        """The report as a plain-text table: accuracies per member, agreement matrix, ξ/V_th per layer."""
        T = self.time_steps
        lines = [f"self-ensemble of T={T} members on {self.samples:,} samples",
                 f"{'t':>3s} {'member acc':>11s} {'mean of 0..t':>13s}"]
        lines += [f"{t:>3d} {100 * a:>10.2f}% {100 * c:>12.2f}%"
                  for t, (a, c) in enumerate(zip(self.member_acc, self.cumulative_acc))]
        lines += [f"ensemble accuracy {100 * self.ensemble_acc:.2f}% "
                  f"(best member {100 * max(self.member_acc):.2f}%)", "",
                  "agreement of members i, j (% of samples with the same prediction)",
                  "    " + "".join(f"{j:>7d}" for j in range(T))]
        lines += [f"{i:>3d} " + "".join(f"{100 * a:>7.1f}" for a in row) for i, row in enumerate(self.agreement)]
        if self.layers:
            w = max(10, *(len(x.name) for x in self.layers))
            lines += ["", f"{'layer':{w}s} {'xi/Vth (t>=1)':>16s}  {'xi/Vth per step':<{7 * T}s} firing rate per step"]
            for x in self.layers:
                noise = "-" if x.xi_mean is None else f"{x.xi_mean:+.3f} +- {x.xi_std:.3f}"
                steps = "".join(f"{v:>+7.3f}" for v in x.xi_step)
                lines.append(f"{x.name:{w}s} {noise:>16s}  {steps:<{7 * T}s} "
                             + " ".join(f"{r:.3f}" for r in x.firing_rate))
        if self.skipped:
            lines += ["", f"no xi for (unknown neuron type): {', '.join(self.skipped)}"]
        return "\n".join(lines)


def _single_step(model: nn.Module) -> dict[nn.Module, str]:
    """Switch to single-step mode; returns every StepModule's previous ``step_mode``."""
    saved = {m: m.step_mode for m in model.modules() if isinstance(m, base.StepModule)}
    set_step_mode(model, "s")
    return saved


@torch.no_grad()
def ensemble(model: nn.Module, loader, method, device: torch.device | str | None = None,
             max_batches: int | None = None) -> EnsembleReport:
    """Measure ``model`` (any bsnn model, online or BPTT) as a self-ensemble of ``method.T`` members on
    ``loader``'s (x, y) batches. ``method``: an ``OnlineMethod`` or ``BPTTMethod`` (its ``T``, ``temporal``
    input layout and AMP dtype are used). ``device``: where inputs go (default: the model's). The
    model's training flag and step modes are restored afterwards."""
    from ..train.losses import logits
    from ..train.method import frame

    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    T = method.T
    if device is None:
        p = next(itertools.chain(model.parameters(), model.buffers()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    amp = getattr(method, "amp_dtype", None)
    f64 = dict(dtype=torch.float64, device=device)

    neurons = [(n, m) for n, m in model.named_modules() if is_neuron(m)]
    known = [(n, m, residue(m)) for n, m in neurons if residue(m) is not None]
    skipped = [f"{n} ({type(m).__name__})" for n, m in neurons if residue(m) is None]
    # per layer, per step: sums of xi/Vth, (xi/Vth)^2, spikes (on device) and element counts
    xi_sum = {n: torch.zeros(T, **f64) for n, _, _ in known}
    xi_sq = {n: torch.zeros(T, **f64) for n, _, _ in known}
    spikes = {n: torch.zeros(T, **f64) for n, _, _ in known}
    count = {n: [0] * T for n, _, _ in known}
    fired = {n: [0] * T for n, _, _ in known}
    step = [0]

    def pre_hook(name, fn):
        def hook(mod, args):
            x, v = args[0], mod.v
            if not isinstance(v, torch.Tensor):
                v = torch.full_like(x, float(v))
            r = fn(v.float()) / mod.v_threshold
            xi_sum[name][step[0]] += r.sum(dtype=torch.float64)
            xi_sq[name][step[0]] += r.square().sum(dtype=torch.float64)
            count[name][step[0]] += r.numel()
        return hook

    def post_hook(name):
        def hook(mod, args, out):
            if isinstance(out, torch.Tensor):
                spikes[name][step[0]] += out.sum(dtype=torch.float64)
                fired[name][step[0]] += out.numel()
        return hook

    member = torch.zeros(T, dtype=torch.long, device=device)
    cumulative = torch.zeros(T, dtype=torch.long, device=device)
    agree = torch.zeros(T, T, dtype=torch.long, device=device)
    samples = 0

    was_training = model.training
    saved = _single_step(model)
    handles = []
    try:
        model.eval()
        for n, m, fn in known:
            handles += [m.register_forward_pre_hook(pre_hook(n, fn)), m.register_forward_hook(post_hook(n))]
        for x, y in itertools.islice(loader, max_batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            functional.reset_net(model)
            outs = []
            for t in range(T):
                step[0] = t
                with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
                    outs.append(logits(model(frame(x, t, method.temporal))).float())
            out = torch.stack(outs)                                   # [T, B, classes]
            pred = out.argmax(-1)                                     # [T, B]
            member += (pred == y).sum(1)
            cumulative += (out.cumsum(0).argmax(-1) == y).sum(1)
            agree += (pred[:, None] == pred[None]).sum(-1)
            samples += y.numel()
        functional.reset_net(model)          # drop batch-sized state
    finally:
        for h in handles:
            h.remove()
        for m, mode in saved.items():
            m.step_mode = mode
        model.train(was_training)
    if samples == 0:
        raise ValueError("the loader yielded no batches")

    layers = []
    for n, m, _ in known:
        s, q, later = xi_sum[n].cpu(), xi_sq[n].cpu(), sum(count[n][1:])
        mean = float(s[1:].sum()) / later if later else None
        std = max(float(q[1:].sum()) / later - mean ** 2, 0.0) ** 0.5 if later else None
        layers.append(LayerNoise(n, type(m).__name__, mean, std, _per(s, count[n]), _per(spikes[n], fired[n])))
    cum = _per(cumulative, samples)
    return EnsembleReport(T, samples, _per(member, samples), cum[-1], cum, _per(agree, samples), layers, skipped)


def _per(total: torch.Tensor, n) -> list:
    """total / n as (nested) Python floats; n a count or a list of counts per entry (0 counts as 1)."""
    n = torch.tensor(n, dtype=torch.float64).clamp(min=1)
    return (total.cpu().double() / n).tolist()
