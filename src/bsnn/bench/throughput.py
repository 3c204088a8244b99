"""Training throughput (samples/s) of the benchmark setups, measured side by side (``bsnn bench throughput``).

All setups live in one process; each repeat times one batch of every (setup, T) in turn, so machine
noise hits all of them alike; the median over repeats is reported with its ratio to BPTT at the same T.
On GPU, SpikingJelly dispatches its multi-step LIF to its fastest available backend automatically.
"""
from __future__ import annotations

import statistics
import time

import torch

from .report import hardware
from .setups import SETUPS, build_setup

__all__ = ["run"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(time_steps=(1, 2, 4, 8), setups=SETUPS, batch_size: int = 64, channels=(64, 128, 256),
        repeats: int = 5, warmup: int = 1, device: str = "auto", log=print) -> tuple[list[dict], str]:
    """Time one training batch of every (setup, T) in ``repeats`` interleaved rounds, after ``warmup`` batches.

    Returns one row per (setup, T) with the median samples/s and ms/batch (and the ratio to BPTT at the same
    T when ``bptt`` is among ``setups``) and a one-line description of the hardware and the setup."""
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    runs = {(s, T): build_setup(s, T, dev, channels=channels) for s in setups for T in time_steps}
    for r in runs.values():
        for _ in range(warmup):
            r.train_batch(x, y)
    times: dict[tuple, list[float]] = {k: [] for k in runs}
    for rep in range(repeats):
        for k, r in runs.items():
            _sync(dev)
            t0 = time.perf_counter()
            r.train_batch(x, y)
            _sync(dev)
            times[k].append(time.perf_counter() - t0)
        log(f"repeat {rep + 1}/{repeats} done")
    rows = []
    for (s, T), ts in times.items():
        med = statistics.median(ts)
        rows.append({"method": runs[(s, T)].label, "T": T, "samples/s": round(batch_size / med, 1),
                     "ms/batch": round(1000 * med, 1)})
    bptt = {r["T"]: r["samples/s"] for r in rows if r["method"] == runs[("bptt", time_steps[0])].label} \
        if "bptt" in setups else {}
    for r in rows:
        if bptt:
            r["vs BPTT"] = f"{r['samples/s'] / bptt[r['T']]:.2f}x"
    desc = (f"{hardware(dev.type)}; batch {batch_size}; conv net {list(channels)} on 3x32x32; "
            f"median of {repeats} interleaved repeats")
    return rows, desc
