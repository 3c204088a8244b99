"""Lower a bsnn model (eval mode) to the layer graph of the packed format (see ``bsnn.runtime.format``).

The graph is the one every writer starts from (packed file, NIR, ONNX step): nodes in execution order,
binary weights as ±1 float arrays (packed only when written), BatchNorm folded into the per-channel
``scale``/``bias`` of the layer it directly follows, a latent-weight binarizer's per-channel scale
folded into ``scale`` too. A BatchNorm that follows no layer (SEI's pre-activation units) becomes an
``affine`` node. Folding uses PyTorch's own eval-mode arithmetic (``invstd`` in float32, the shift as
one fused multiply-add), so a binary layer with BatchNorm rounds exactly as the PyTorch model does.

Covered: the sequential models (``mlp``, ``convnet``, ``vgg11``), the Bi-Real ResNets (``resnet18``,
``resnet34``), the basic-block ResNets (``resnet19``, ``spiking_resnet18``) and the SEI ResNets
(``sei_resnet18/34/tiny``, every shortcut, ``head_kd``), online or BPTT, binary or full precision. AGMM
in its default forward mode, attention (QKFormer) and any module not listed here are refused with one
line naming the module.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from spikingjelly.activation_based import neuron as sj_neuron
from torch import nn

from ..nn.binarize import sign
from ..nn.binary import is_binary, is_latent_binary
from ..nn.modulation import AGMM
from ..nn.neuron import OnlineLIFNode
from ..nn.trace import TraceRouted

__all__ = ["Graph", "lower", "fold_batchnorm", "UnsupportedModel", "refuse_per_step"]


class UnsupportedModel(ValueError):
    """The model holds something the packed format cannot represent."""


@dataclass
class Graph:
    """A lowered model: ``nodes`` in execution order, the ``tensors`` they name (binary weights as ±1
    float32) and the name of the ``output`` node."""
    nodes: list[dict] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)    # binary weights as ±1 float32
    output: str = "input"

    def node(self, name: str) -> dict:
        """The node called ``name`` (``StopIteration`` when there is none)."""
        return next(n for n in self.nodes if n["name"] == name)


def refuse_per_step(graph: "Graph", fmt: str) -> None:
    """Formats without time-varying parameters (NIR, the ONNX step) cannot hold per-step BatchNorm."""
    if any(v.ndim == 2 for k, v in graph.tensors.items() if k.endswith((".scale", ".bias"))):
        raise UnsupportedModel(f"BatchNorm statistics per time step (model.bn_stats=per_step) have no {fmt} "
                               "form; export the packed file, or train with model.bn_stats=shared")


def _pair(v) -> list[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(a) for a in v]


def fold_batchnorm(bn: nn.modules.batchnorm._BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode BatchNorm as ``fma(x, a, b)``: ``a = weight / sqrt(var + eps)`` in float32 and
    ``b = bias − mean·a`` rounded once (PyTorch's CPU kernel). ``[C]`` each, or ``[T, C]`` for
    statistics per time step (``StepBatchNorm``)."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModel("a BatchNorm without running statistics cannot be folded "
                               "(track_running_stats=False normalises with batch statistics)")
    f32 = np.float32
    var = bn.running_var.detach().float().cpu().numpy()
    mean = bn.running_mean.detach().float().cpu().numpy()
    w = bn.weight.detach().float().cpu().numpy() if bn.weight is not None else np.ones_like(var)
    b = bn.bias.detach().float().cpu().numpy() if bn.bias is not None else np.zeros_like(var)
    invstd = (f32(1) / np.sqrt(var + f32(bn.eps))).astype(f32)
    a = (invstd * w).astype(f32)
    shift = (b.astype(np.float64) - mean.astype(np.float64) * a.astype(np.float64)).astype(f32)
    return a, shift


def _batchnorm_of(m: nn.Module | None) -> nn.Module | None:
    """The BatchNorm ``m`` amounts to in eval: itself, or a (BN, AGMM) pair whose AGMM only scales
    gradients (``mode="backward"``); None otherwise."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m
    if isinstance(m, nn.Sequential) and len(m) == 2:
        bns = [c for c in m if isinstance(c, nn.modules.batchnorm._BatchNorm)]
        gates = [c for c in m if isinstance(c, AGMM)]
        if len(bns) == 1 and len(gates) == 1 and gates[0].mode == "backward":
            return bns[0]
    return None


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _weight_module(m: nn.Module) -> nn.Module | None:
    layer = m.layer if isinstance(m, TraceRouted) else m
    return layer if isinstance(layer, (nn.Linear, nn.Conv2d)) else None


class _Lowerer:
    def __init__(self, model: nn.Module):
        self.model_name = type(model).__name__
        self.g = Graph()

    def refuse(self, name: str, m: nn.Module, why: str = "") -> None:
        what = type(m).__name__
        raise UnsupportedModel(f"cannot export {self.model_name}: {what} at '{name or '<root>'}' "
                               f"{why or 'has no equivalent in the packed format'}")

    def emit(self, op: str, name: str, inputs: list[str], tensors: dict | None = None, **attrs) -> str:
        base, i = name or op, 1
        taken = {n["name"] for n in self.g.nodes} | {"input"}
        while name in taken or not name:
            name, i = f"{base}#{i}", i + 1
        self.g.nodes.append({"name": name, "op": op, "inputs": inputs, **attrs})
        for key, t in (tensors or {}).items():
            if t is not None:
                self.g.tensors[f"{name}.{key}"] = t
        return name

    # -- weight layers -------------------------------------------------------------------------------
    def weight(self, name: str, m: nn.Module, x: str, bn: nn.Module | None = None) -> str:
        layer = _weight_module(m)
        w = layer.weight.detach().float().cpu()
        scale = None
        if is_latent_binary(layer.weight):
            with torch.no_grad():
                wb = layer.binarizer(w).float()
            mag = wb.abs().flatten(1)
            if not bool((mag.amax(1) == mag.amin(1)).all()) or not bool((mag > 0).all()):
                self.refuse(name, layer, "binarizes to values that are not ±α per output channel")
            w = sign(wb)
            alpha = mag[:, 0].numpy().astype(np.float32)
            scale = None if bool((mag[:, 0] == 1).all()) else alpha
            binary = True
        elif is_binary(layer.weight):
            if not bool(((w == 1) | (w == -1)).all()):
                self.refuse(name, layer, "has a binary weight that is not ±1")
            binary = True
        else:
            binary = False
        bias = None if layer.bias is None else layer.bias.detach().float().cpu().numpy()
        if bn is not None:
            a, b = fold_batchnorm(bn)
            if scale is None and bias is None:
                scale, bias = a, b
            else:
                s0 = np.ones_like(a) if scale is None else scale
                b0 = np.zeros_like(a) if bias is None else bias
                scale = (s0 * a).astype(np.float32)
                bias = (b0.astype(np.float64) * a + b).astype(np.float32)
        tensors = {"weight": w.numpy().astype(np.float32), "scale": scale, "bias": bias}
        if isinstance(layer, nn.Linear):
            return self.emit("linear", name, [x], tensors, in_features=layer.in_features,
                             out_features=layer.out_features, binary=binary)
        if layer.groups != 1 or _pair(layer.dilation) != [1, 1] or layer.padding_mode != "zeros" \
                or isinstance(layer.padding, str):
            self.refuse(name, layer, "uses groups, dilation, string or non-zero padding (not in the format)")
        return self.emit("conv2d", name, [x], tensors, in_channels=layer.in_channels,
                         out_channels=layer.out_channels, kernel=_pair(layer.kernel_size),
                         stride=_pair(layer.stride), padding=_pair(layer.padding), binary=binary)

    # -- containers and modules ----------------------------------------------------------------------
    def seq(self, items: list[tuple[str, nn.Module]], x: str) -> str:
        i = 0
        while i < len(items):
            name, m = items[i]
            bn = _batchnorm_of(items[i + 1][1]) if i + 1 < len(items) else None
            if _weight_module(m) is not None and bn is not None:
                x, i = self.weight(name, m, x, bn), i + 2
            else:
                x, i = self.module(name, m, x), i + 1
        return x

    def children(self, name: str, m: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(_join(name, k), c) for k, c in m.named_children()]

    def module(self, name: str, m: nn.Module, x: str) -> str:
        from ..models.resnet import BiRealBlock, SpikingBasicBlock, SpikingBiRealResNet, SpikingResNet
        from ..models.sei_resnet import SEIBlock, SEIResNet

        if isinstance(m, nn.Sequential):
            return self.seq(self.children(name, m), x)
        if isinstance(m, nn.Identity):
            return x
        if _weight_module(m) is not None:
            return self.weight(name, m, x)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            a, b = fold_batchnorm(m)
            return self.emit("affine", name, [x], {"scale": a, "bias": b}, channels=a.shape[-1])
        if isinstance(m, AGMM):
            if m.mode == "backward":
                return x
            self.refuse(name, m, "gates the forward pass with a time-dependent factor (AGMM mode='forward')")
        if isinstance(m, (OnlineLIFNode, sj_neuron.LIFNode)):
            return self.neuron(name, m, x)
        if isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                self.refuse(name, m, "flattens other than from dim 1")
            return self.emit("flatten", name, [x])
        if isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                self.refuse(name, m, "has a divisor_override")
            return self.emit("avgpool2d", name, [x], kernel=_pair(m.kernel_size),
                             stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                             padding=_pair(m.padding), ceil_mode=bool(m.ceil_mode),
                             count_include_pad=bool(m.count_include_pad))
        if isinstance(m, nn.MaxPool2d):
            if m.ceil_mode or m.return_indices or _pair(m.dilation) != [1, 1]:
                self.refuse(name, m, "uses ceil_mode, dilation or indices")
            return self.emit("maxpool2d", name, [x], kernel=_pair(m.kernel_size),
                             stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                             padding=_pair(m.padding))
        if isinstance(m, nn.AdaptiveAvgPool2d):
            if _pair(m.output_size) != [1, 1]:
                self.refuse(name, m, "pools to a size other than 1x1")
            return self.emit("global_avgpool", name, [x])
        if isinstance(m, BiRealBlock):
            c = self.seq([(f"{name}.conv", m.conv), (f"{name}.bn", m.bn)], self.module(f"{name}.neuron", m.neuron, x))
            sc = x if m.downsample is None else self.module(f"{name}.downsample", m.downsample, x)
            return self.emit("add", f"{name}.add", [c, sc])
        if isinstance(m, SpikingBasicBlock):
            o = self.seq([(f"{name}.conv1", m.conv1), (f"{name}.bn1", m.bn1), (f"{name}.lif1", m.lif1),
                          (f"{name}.conv2", m.conv2), (f"{name}.bn2", m.bn2)], x)
            sc = x if m.downsample is None else self.module(f"{name}.downsample", m.downsample, x)
            return self.module(f"{name}.lif2", m.lif2, self.emit("add", f"{name}.add", [o, sc]))
        if isinstance(m, SEIBlock):
            return self.sei_block(name, m, x)
        if isinstance(m, SpikingBiRealResNet):
            return self.seq([(_join(name, k), getattr(m, k)) for k in ("stem", "layers", "head")], x)
        if isinstance(m, SpikingResNet):
            return self.seq([(_join(name, k), getattr(m, k))
                             for k in ("stem", "stem_lif", "stem_pool", "layers", "pool", "fc")], x)
        if isinstance(m, SEIResNet):
            x = self.seq([(_join(name, k), getattr(m, k)) for k in ("stem", "layers", "bn", "lif", "pool")], x)
            out = self.module(_join(name, "head"), m.head, x)
            if m.head_kd is None:
                return out
            kd = self.module(_join(name, "head_kd"), m.head_kd, x)
            return self.emit("mean", _join(name, "head_mean"), [out, kd])
        self.refuse(name, m)

    def neuron(self, name: str, m: nn.Module, x: str) -> str:
        if isinstance(m, OnlineLIFNode):
            return self.emit("lif", name, [x], tau=m.tau, v_threshold=m.v_threshold, v_reset=None,
                             decay_input=False, charge="decay")
        if type(m) is not sj_neuron.LIFNode:
            self.refuse(name, m, "is a neuron variant the format does not describe")
        return self.emit("lif", name, [x], tau=float(m.tau), v_threshold=float(m.v_threshold),
                         v_reset=None if m.v_reset is None else float(m.v_reset),
                         decay_input=bool(m.decay_input), charge="spikingjelly")

    def sei_block(self, name: str, m, x: str) -> str:
        def unit(k: int, inp: str) -> str:
            return self.seq([(f"{name}.bn{k}", getattr(m, f"bn{k}")), (f"{name}.lif{k}", getattr(m, f"lif{k}")),
                             (f"{name}.conv{k}", getattr(m, f"conv{k}"))], inp)

        def down() -> str:
            return self.module(f"{name}.downsample", m.downsample, x)
        h = unit(1, x)
        if m.shortcut == "per_layer":
            h = self.emit("add", f"{name}.add1", [h, down()])
        out = unit(2, h)
        if m.shortcut == "per_layer":
            return self.emit("add", f"{name}.add2", [out, h])
        if m.shortcut == "block":
            return self.emit("add", f"{name}.add", [out, down()])
        return out


def lower(model: nn.Module) -> Graph:
    """The eval-mode graph of ``model`` (which is left unchanged)."""
    low = _Lowerer(model)
    with torch.no_grad():
        low.g.output = low.module("", model, "input")
    if low.g.output == "input":
        raise UnsupportedModel(f"cannot export {type(model).__name__}: it has no layers")
    return low.g
