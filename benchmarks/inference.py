"""Inference on the CPU: PyTorch float32 eval vs the packed runtime's reference and popcount paths.

For the digits MLP (the demo model), the MNIST convnet and the BSO paper's VGG-11 (CIFAR-10 shape), with
random weights and BatchNorm statistics drawn so that layers fire: latency (median of ``--repeats`` runs
after one warm-up) and samples/s of a whole T-step forward at each batch size, for

* ``torch``: the PyTorch model in eval mode (``torch.no_grad``, the default thread count),
* ``reference``: ``bsnn.runtime``, binary weights unpacked to ±1 float32, numpy matmul (BLAS),
* ``packed``: ``bsnn.runtime``, binary layers on spikes as ``2·popcount(s AND w⁺) − popcount(s)``
  (the numba kernel when the ``fast`` extra is installed, else numpy),

and the time spent in the binary layers alone (torch: forward hooks around them; runtime: the binary
layer nodes, im2col and bit packing included). Then file sizes: the summary's (binary at 1 bit, real at
32 bit), the packed file (float32 and float16 real tensors) and a float32 state_dict as a checkpoint
holds it. Every run checks that the three paths predict the same classes. Prints markdown tables.

    python benchmarks/inference.py                       # the full measurement (minutes)
    python benchmarks/inference.py --smoke               # one repeat, batch 1 (seconds)
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional
from torch import nn

from bsnn import models
from bsnn.bench.report import hardware, markdown_table
from bsnn.export import save_packed
from bsnn.measure.params import count_parameters
from bsnn.nn.binary import BinaryParameter
from bsnn.runtime import kernel
from bsnn.runtime.format import read
from bsnn.runtime.model import PackedModel

MODELS = {
    # shared BatchNorm statistics, as measured in docs/benchmarks.md (per-step rows add file bytes, no work)
    "digits_mlp": (lambda: models.create("mlp", in_features=64, hidden=(512, 512), bn_stats="shared"), (1, 8, 8)),
    "mnist_convnet": (lambda: models.create("convnet", channels=(32, 64, 128), bn_stats="shared"), (1, 28, 28)),
    "vgg11": (lambda: models.create("vgg11", num_classes=10, bn_stats="shared"), (3, 32, 32)),
}


def firing_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm statistics that keep layers firing (random-weight sums have a large variance)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.weight.copy_(torch.rand(c, generator=g) * 0.1 + 0.05)
                m.bias.copy_(torch.rand(c, generator=g) * 0.6)
    return model.eval()


def _is_binary_layer(m: nn.Module) -> bool:
    """The weight layer itself (a TraceRouted wrapper calls it in eval, so its hooks fire once)."""
    return isinstance(m, (nn.Linear, nn.Conv2d)) and isinstance(m.weight, BinaryParameter)


class _Clock:
    def __init__(self):
        self.total, self._t0 = 0.0, 0.0

    def start(self, *_):
        self._t0 = time.perf_counter()

    def stop(self, *_):
        self.total += time.perf_counter() - self._t0


def torch_forward(model: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    functional.reset_net(model)
    with torch.no_grad():
        total = sum(model(x) for _ in range(T))
    functional.reset_net(model)
    return total


class TimedRuntime(PackedModel):
    """The runtime with a clock around its binary layers."""
    clock = 0.0

    def _weight_layer(self, n, x):
        if not n["binary"]:
            return super()._weight_layer(n, x)
        t0 = time.perf_counter()
        y = super()._weight_layer(n, x)
        self.clock += time.perf_counter() - t0
        return y


def measure(fn, repeats: int) -> tuple[float, float]:
    """(median seconds, median seconds in binary layers) of ``fn() -> binary seconds``."""
    fn()                                            # warm-up (caches, numba load, weight unpacking)
    whole, binary = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b = fn()
        whole.append(time.perf_counter() - t0)
        binary.append(b)
    return statistics.median(whole), statistics.median(binary)


def bench_model(name: str, batch_sizes, T: int, repeats: int, folder: Path) -> tuple[list, dict]:
    make, shape = MODELS[name]
    torch.manual_seed(0)
    model = firing_bn(make())
    info = save_packed(model, folder / f"{name}.bsnn", T, shape)
    half = save_packed(model, folder / f"{name}.f16.bsnn", T, shape, real_dtype="float16")
    torch.save({"model": model.state_dict()}, folder / f"{name}.pt")
    sizes = {"model": name, "summary bytes": f"{info['summary_bits'] / 8:,.0f}",
             "packed file": f"{info['bytes']:,}", "file/summary": f"{info['bytes'] / (info['summary_bits'] / 8):.4f}",
             "packed, float16 reals": f"{half['bytes']:,}",
             "float32 state_dict": f"{(folder / f'{name}.pt').stat().st_size:,}",
             "binary params": f"{count_parameters(model).binary:,}"}
    desc, tensors = read(folder / f"{name}.bsnn")
    runtimes = {mode: TimedRuntime(desc, tensors, mode) for mode in ("reference", "packed")}
    clock = _Clock()
    hooks = []
    for m in model.modules():
        if _is_binary_layer(m):
            hooks += [m.register_forward_pre_hook(clock.start), m.register_forward_hook(clock.stop)]
    rows = []
    for b in batch_sizes:
        x = torch.rand(b, *shape)
        xn = x.numpy()

        def run_torch():
            clock.total = 0.0
            torch_forward(model, x, T)
            return clock.total

        def run_rt(mode):
            rt = runtimes[mode]
            rt.clock = 0.0
            rt.run(xn)
            return rt.clock

        preds = {"torch": torch_forward(model, x, T).argmax(1).numpy(),
                 **{m: rt.run(xn).argmax(1) for m, rt in runtimes.items()}}
        agree = all(np.array_equal(preds["torch"], p) for p in preds.values())
        t_torch, bt_torch = measure(run_torch, repeats)
        t_ref, bt_ref = measure(lambda: run_rt("reference"), repeats)
        t_pk, bt_pk = measure(lambda: run_rt("packed"), repeats)
        rows.append({"model": name, "batch": b, "T": T,
                     "torch ms": f"{1e3 * t_torch:.2f}", "reference ms": f"{1e3 * t_ref:.2f}",
                     "packed ms": f"{1e3 * t_pk:.2f}",
                     "torch samples/s": f"{b / t_torch:,.1f}", "reference samples/s": f"{b / t_ref:,.1f}",
                     "packed samples/s": f"{b / t_pk:,.1f}", "packed vs torch": f"{t_torch / t_pk:.2f}x",
                     "binary layers torch ms": f"{1e3 * bt_torch:.2f}", "binary layers packed ms": f"{1e3 * bt_pk:.2f}",
                     "binary layers packed vs torch": f"{bt_torch / max(bt_pk, 1e-9):.2f}x",
                     "same predictions": "yes" if agree else "NO"})
    for h in hooks:
        h.remove()
    return rows, sizes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    p.add_argument("--time-steps", "-T", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--smoke", action="store_true", help="one repeat at batch 1 (a check that it runs)")
    args = p.parse_args(argv)
    if args.smoke:
        args.repeats, args.batch_sizes = 1, [1]
    rows, sizes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r, s = bench_model(name, args.batch_sizes, args.time_steps, args.repeats, Path(tmp))
            rows += r
            sizes.append(s)
    print(f"\nInference, T={args.time_steps}, median of {args.repeats} runs; {hardware()}; "
          f"packed path kernel: {kernel()}\n")
    print(markdown_table(rows))
    print("\nFile sizes (bytes)\n")
    print(markdown_table(sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
