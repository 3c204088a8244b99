"""ONNX export of one time step, ``(x, v_1 … v_L) -> (out, v_1' … v_L')``, the loop left to the caller.

Exporting the time loop itself (ONNX ``Loop``/``Scan``) does not convert reliably across SNN libraries,
so, like them, bsnn writes one step: the graph inputs are the step's input ``x`` and one membrane
tensor ``v.<i>`` per LIF layer (zeros at t = 0); the outputs are the step's logits ``out`` and the new
membranes ``v_next.<i>`` to feed back. bsnn's prediction is ``out`` summed over the model's T steps
(``metadata_props``: ``bsnn_time_steps``, ``bsnn_states``). The graph is built with ``onnx.helper``
from the lowered graph (optional extra ``onnx``; ``onnxruntime`` runs it). ONNX has no 1-bit type:
binary weights are float ±1 initializers (metadata ``bsnn_binary_weights`` names them) and a folded
BatchNorm is a ``Mul`` then an ``Add``: two roundings where PyTorch (and ``bsnn.runtime``) round a
fused multiply-add once, so a membrane within rounding of the threshold can flip a spike, and in a deep
residual network such a flip can spread: the ONNX step matches bsnn to float32 rounding, not bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from .lower import Graph, UnsupportedModel, lower, refuse_per_step
from .packed import node_shapes

__all__ = ["export_onnx_step", "to_onnx", "OPSET"]

OPSET = 17


class _Builder:
    def __init__(self, helper, numpy_helper):
        self.h, self.nh = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, value) -> str:
        self.inits.append(self.nh.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def op(self, kind: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self.count += 1
        out = out or f"t{self.count}_{kind}"
        self.nodes.append(self.h.make_node(kind, inputs, [out], **attrs))
        return out


def _epilogue(b: _Builder, graph: Graph, n: dict, acc: str, channel_shape) -> str:
    scale, bias = graph.tensors.get(n["name"] + ".scale"), graph.tensors.get(n["name"] + ".bias")
    if scale is not None:
        acc = b.op("Mul", [acc, b.const(n["name"] + ".scale", scale.reshape(channel_shape))])
    if bias is not None:
        acc = b.op("Add", [acc, b.const(n["name"] + ".bias", bias.reshape(channel_shape))])
    return acc


def _lif(b: _Builder, n: dict, x: str, v: str, v_next: str) -> str:
    name, tau, vth = n["name"], n["tau"], n["v_threshold"]
    if n["charge"] == "decay":
        h = b.op("Add", [b.op("Mul", [v, b.const(name + ".decay", 1.0 - 1.0 / tau)]), x])
    else:
        vr = b.const(name + ".vr", 0.0 if n["v_reset"] is None else n["v_reset"])
        t = b.const(name + ".tau", tau)
        dv = b.op("Sub", [v, vr])
        h = b.op("Add", [v, b.op("Div", [b.op("Sub", [x, dv]), t])]) if n["decay_input"] else \
            b.op("Add", [b.op("Sub", [v, b.op("Div", [dv, t])]), x])
    th = b.const(name + ".vth", vth)
    s = b.op("Cast", [b.op("GreaterOrEqual", [h, th])], to=1)
    if n["v_reset"] is None:
        b.op("Sub", [h, b.op("Mul", [s, th])], v_next)
    else:
        one = b.const(name + ".one", 1.0)
        b.op("Add", [b.op("Mul", [s, b.const(name + ".reset", n["v_reset"])]),
                     b.op("Mul", [b.op("Sub", [one, s]), h])], v_next)
    return s


def to_onnx(model: nn.Module, input_shape, time_steps: int = 1):
    """The ``onnx.ModelProto`` of one time step of ``model``."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise UnsupportedModel("ONNX export needs the onnx package (pip install 'bsnn[onnx]')") from None
    graph = lower(model)
    refuse_per_step(graph, "ONNX")
    shapes = node_shapes(graph, input_shape)
    b = _Builder(helper, numpy_helper)
    val = {"input": "x"}
    states, binary = [], []
    for n in graph.nodes:
        name, op = n["name"], n["op"]
        x = val[n["inputs"][0]]
        if op in ("linear", "conv2d"):
            w = graph.tensors[name + ".weight"].astype(np.float32)
            if n["binary"]:
                binary.append(name + ".weight")
            if op == "linear":
                acc = b.op("MatMul", [x, b.const(name + ".weight", w.T)])
                val[name] = _epilogue(b, graph, n, acc, (1, -1))
            else:
                (ph, pw), (sh, sw) = n["padding"], n["stride"]
                acc = b.op("Conv", [x, b.const(name + ".weight", w)], kernel_shape=n["kernel"],
                           pads=[ph, pw, ph, pw], strides=[sh, sw])
                val[name] = _epilogue(b, graph, n, acc, (1, -1, 1, 1))
        elif op == "affine":
            shape = (1, -1) + (1,) * (len(shapes[name]) - 1)
            y = b.op("Mul", [x, b.const(name + ".scale", graph.tensors[name + ".scale"].reshape(shape))])
            val[name] = b.op("Add", [y, b.const(name + ".bias", graph.tensors[name + ".bias"].reshape(shape))])
        elif op == "lif":
            i = len(states)
            states.append((name, shapes[name]))
            val[name] = _lif(b, n, x, f"v.{i}", f"v_next.{i}")
        elif op == "avgpool2d":
            (ph, pw) = n["padding"]
            val[name] = b.op("AveragePool", [x], kernel_shape=n["kernel"], strides=n["stride"],
                             pads=[ph, pw, ph, pw], ceil_mode=int(n["ceil_mode"]),
                             count_include_pad=int(n["count_include_pad"]))
        elif op == "maxpool2d":
            (ph, pw) = n["padding"]
            val[name] = b.op("MaxPool", [x], kernel_shape=n["kernel"], strides=n["stride"], pads=[ph, pw, ph, pw])
        elif op == "global_avgpool":
            val[name] = b.op("GlobalAveragePool", [x])
        elif op == "flatten":
            val[name] = b.op("Flatten", [x], axis=1)
        elif op == "add":
            val[name] = b.op("Add", [x, val[n["inputs"][1]]])
        elif op == "mean":
            s = b.op("Add", [x, val[n["inputs"][1]]])
            val[name] = b.op("Div", [s, b.const(name + ".two", 2.0)])
        else:
            raise UnsupportedModel(f"cannot export to ONNX: '{name}' is a {op}")
    b.op("Identity", [val[graph.output]], "out")

    def tensor(nm, shape):
        return helper.make_tensor_value_info(nm, TensorProto.FLOAT, ["batch", *shape])
    inputs = [tensor("x", input_shape)] + [tensor(f"v.{i}", s) for i, (_, s) in enumerate(states)]
    outputs = [tensor("out", shapes[graph.output])] + [tensor(f"v_next.{i}", s) for i, (_, s) in enumerate(states)]
    g = helper.make_graph(b.nodes, "bsnn_step", inputs, outputs, b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bsnn")
    m.ir_version = min(m.ir_version, 8)
    helper.set_model_props(m, {"bsnn_time_steps": str(int(time_steps)),
                               "bsnn_states": ",".join(f"v.{i}={nm}" for i, (nm, _) in enumerate(states)),
                               "bsnn_binary_weights": ",".join(binary),
                               "bsnn_loop": "v.i = 0 at t=0; feed v_next.i back; logits = sum of out over t"})
    onnx.checker.check_model(m)
    return m


def export_onnx_step(model: nn.Module, path: str | Path, input_shape, time_steps: int = 1) -> dict:
    """Write one time step of ``model`` as ONNX; returns ``{"path", "bytes", "states"}``."""
    m = to_onnx(model, input_shape, time_steps)          # refuses in one line without the onnx package
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return {"path": str(path), "bytes": path.stat().st_size, "states": len(m.graph.input) - 1}
