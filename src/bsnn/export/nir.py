"""NIR export (the Neuromorphic Intermediate Representation, package ``nir``; optional extra ``nir``).

From the lowered graph: ``linear`` -> ``nir.Affine``, ``conv2d`` -> ``nir.Conv2d``, ``avgpool2d`` and
``global_avgpool`` -> ``nir.AvgPool2d``, ``flatten`` -> ``nir.Flatten``, ``lif`` -> ``nir.LIF``, a
standalone BatchNorm (``affine``) -> a diagonal 1x1 ``nir.Conv2d`` (``nir.Affine`` on features),
``mean`` -> ``nir.Scale(0.5)``; ``add`` becomes no node, since NIR sums every edge that enters a node.
Average pooling with ``ceil_mode`` is written where it does not change the output size (even maps).
NIR has no BatchNorm, so BN is folded: a layer's weight is written as ``scale[c]·W[c]`` with bias
``bias[c]``. A binary layer's weight is therefore ``scale[c]·b`` with ``b ∈ {−1, +1}`` (exactly ±1
where no BN or binarizer scale follows it); its node's metadata says so (``bsnn_binary: true``,
``bsnn_scale``: the per-channel factor, ``b = sign(weight / scale)``). Max pooling has no NIR node and
is refused.

Neurons follow SpikingJelly's NIR convention (``export_to_nir``) with ``dt = 1e-4``: ``tau = τ·dt``,
``r = τ`` without input decay (1 with it), ``v_leak = v_reset``. NIR's LIF resets hard, to
``v_reset``. bsnn's online neuron (and a BPTT model with ``soft_reset``) subtracts the threshold
instead, so such a model is refused unless ``allow_reset_mismatch=True``; then it is written with
``v_reset = 0`` and every LIF's metadata records ``bsnn_reset: "soft"`` — the NIR model's dynamics
then differ from bsnn's after the first spike of a neuron.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ..runtime.ops import pool_out_size
from .lower import UnsupportedModel, lower, refuse_per_step
from .packed import node_shapes

__all__ = ["export_nir", "to_nir", "DT"]

DT = 1e-4


def _require_nir():
    try:
        import nir
    except ImportError:
        raise UnsupportedModel("NIR export needs the nir package (pip install 'bsnn[nir]')") from None
    return nir


def _folded(graph, n: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    w = graph.tensors[n["name"] + ".weight"].astype(np.float32)
    scale = graph.tensors.get(n["name"] + ".scale")
    bias = graph.tensors.get(n["name"] + ".bias")
    nout = w.shape[0]
    if scale is not None:
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    b = np.zeros(nout, np.float32) if bias is None else bias.astype(np.float32)
    return w.astype(np.float32), b, scale


def to_nir(model: nn.Module, input_shape, time_steps: int = 1, allow_reset_mismatch: bool = False):
    """``nir.NIRGraph`` of ``model``; see the module docstring for the mapping."""
    nir = _require_nir()
    graph = lower(model)
    refuse_per_step(graph, "NIR")
    soft = [n["name"] for n in graph.nodes if n["op"] == "lif" and n["v_reset"] is None]
    if soft and not allow_reset_mismatch:
        raise UnsupportedModel(
            f"NIR's LIF resets hard (to v_reset) but this model's neurons reset softly (subtract the threshold; "
            f"{len(soft)} LIF layers, e.g. '{soft[0]}'): export a hard-reset model (method=bptt, "
            f"model.soft_reset=false) or pass --allow-reset-mismatch to write them as hard resets")
    shapes = node_shapes(graph, input_shape)
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    sources: dict[str, list[str]] = {"input": ["input"]}
    edges: list[tuple[str, str]] = []

    def f(shape, value):
        return np.full(shape, value, dtype=np.float32)

    for n in graph.nodes:
        name, op, src = n["name"], n["op"], n["inputs"][0]
        shape_in, shape = shapes[src], shapes[name]
        meta = {"bsnn_name": name, "bsnn_op": op}
        if op == "add":
            sources[name] = sources[n["inputs"][0]] + sources[n["inputs"][1]]
            continue
        if op in ("linear", "conv2d"):
            w, b, scale = _folded(graph, n)
            if n["binary"]:
                meta.update(bsnn_binary=True, bsnn_scale=(scale if scale is not None else np.ones(len(w))).tolist(),
                            bsnn_weight="weight[c] = bsnn_scale[c] * b, b in {-1, +1}")
            node = nir.Affine(weight=w, bias=b, metadata=meta) if op == "linear" else nir.Conv2d(
                input_shape=tuple(shape_in[1:]), weight=w, stride=tuple(n["stride"]), padding=tuple(n["padding"]),
                dilation=(1, 1), groups=1, bias=b, metadata=meta)
        elif op == "affine":
            s, b = graph.tensors[name + ".scale"], graph.tensors[name + ".bias"]
            diag = np.diag(s).astype(np.float32)
            node = nir.Affine(weight=diag, bias=b.astype(np.float32), metadata=meta) if len(shape) == 1 else \
                nir.Conv2d(input_shape=tuple(shape_in[1:]), weight=diag[:, :, None, None], stride=(1, 1),
                           padding=(0, 0), dilation=(1, 1), groups=1, bias=b.astype(np.float32), metadata=meta)
        elif op == "lif":
            reset = 0.0 if n["v_reset"] is None else float(n["v_reset"])
            meta.update(bsnn_reset="soft" if n["v_reset"] is None else "hard", bsnn_charge=n["charge"])
            node = nir.LIF(tau=f(shape, n["tau"] * DT), r=f(shape, 1.0 if n["decay_input"] else n["tau"]),
                           v_leak=f(shape, reset), v_threshold=f(shape, n["v_threshold"]), v_reset=f(shape, reset),
                           metadata=meta)
        elif op == "avgpool2d":
            plain = [pool_out_size(d, k, st, p, False) for d, k, st, p in
                     zip(shape_in[1:], n["kernel"], n["stride"], n["padding"])] == list(shape[1:])
            if not plain or (any(n["padding"]) and not n["count_include_pad"]):   # ceil_mode that matters
                raise UnsupportedModel(f"cannot export to NIR: average pooling '{name}' rounds its output size "
                                       f"up (ceil_mode) or excludes padding here, which nir.AvgPool2d cannot say")
            node = nir.AvgPool2d(kernel_size=np.array(n["kernel"]), stride=np.array(n["stride"]),
                                 padding=np.array(n["padding"]), metadata=meta)
        elif op == "global_avgpool":
            hw = np.array(shape_in[1:])
            node = nir.AvgPool2d(kernel_size=hw, stride=hw, padding=np.array([0, 0]), metadata=meta)
        elif op == "flatten":
            node = nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=0, end_dim=-1, metadata=meta)
        elif op == "mean":
            sources_mean = sources[n["inputs"][0]] + sources[n["inputs"][1]]
            nodes[name] = nir.Scale(scale=f(shape, 0.5), metadata=meta)
            edges += [(s, name) for s in sources_mean]
            sources[name] = [name]
            continue
        else:
            raise UnsupportedModel(f"cannot export to NIR: '{name}' is a {op}, which NIR has no node for")
        nodes[name] = node
        edges += [(s, name) for s in sources[src]]
        sources[name] = [name]
    nodes["output"] = nir.Output(output_type={"output": np.array(shapes[graph.output])})
    edges += [(s, "output") for s in sources[graph.output]]
    meta = {"bsnn_time_steps": int(time_steps), "bsnn_dt": DT,
            "bsnn_readout": "sum of the output over the time steps"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def export_nir(model: nn.Module, path: str | Path, input_shape, time_steps: int = 1,
               allow_reset_mismatch: bool = False) -> dict:
    """Write ``model`` as a NIR (HDF5) file; returns ``{"path", "bytes", "nodes"}``."""
    nir = _require_nir()
    g = to_nir(model, input_shape, time_steps, allow_reset_mismatch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), g)
    return {"path": str(path), "bytes": path.stat().st_size, "nodes": len(g.nodes)}
