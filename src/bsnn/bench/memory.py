"""Training memory versus T for the benchmark setups (``bsnn bench memory``).

Each (setup, T) runs in its own process, because a process's peak RSS never goes down. Reported:
  saved MiB       largest amount saved for backward by one graph (saved-tensor hooks)
  persistent MiB  parameters + gradients + optimizer state, as stored (±1 weights as float32)
  ..., ±1 packed  the same with exact ±1 weights at 1 bit: BSO keeps no latent weight, so this is
                  about one float32 tensor per binary weight below the latent-weight (BPTT) setup
  peak MiB        CUDA max allocated (GPU) or process peak RSS (CPU), over measured batches that
                  follow warm-up batches (Linux: VmHWM reset through /proc/self/clear_refs)
  increment MiB   peak minus what the process held just before the measured batches
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from ..measure import SavedTensorMeter, peak_rss_bytes, persistent_bytes
from .report import hardware
from .setups import SETUPS, build_setup

__all__ = ["measure_one", "run"]

MIB = 2 ** 20


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_since_reset() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))


def measure_one(setup: str, T: int, batch_size: int, channels, device: str, warmup: int = 2,
                batches: int = 2) -> dict:
    """Warm-up batches first (allocator caches, lazy state), then the peak over ``batches`` batches."""
    torch.manual_seed(0)
    dev = torch.device(device)
    s = build_setup(setup, T, dev, channels=channels)
    x = torch.randn(batch_size, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    for _ in range(warmup):
        s.train_batch(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        resettable = True
    else:
        resettable = _reset_peak_rss()
        base = _current_rss()
    meter = SavedTensorMeter()
    for _ in range(batches):
        with meter.measure():
            s.train_batch(x, y)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _peak_rss_since_reset() if resettable else peak_rss_bytes()
    pb = persistent_bytes(s.model, s.optimizer)
    return {"method": s.label, "T": T, "saved MiB": round(meter.peak / MIB, 2),
            "persistent MiB": round(pb["persistent_bytes"] / MIB, 2),
            "persistent MiB, ±1 packed": round(pb["persistent_bytes_packed"] / MIB, 2),
            "optimizer state MiB": round(pb["optimizer_state_bytes"] / MIB, 2),
            "peak MiB": round(peak / MIB, 1), "increment MiB": round((peak - base) / MIB, 1)}


def run(time_steps=(1, 2, 4, 8, 16), setups=SETUPS, batch_size: int = 64, channels=(64, 128, 256),
        device: str = "auto", log=print) -> tuple[list[dict], str]:
    """Returns the rows and a one-line description of the hardware and network."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # A fixed mmap threshold makes glibc return every large tensor to the OS when it is freed, so
    # RSS follows live memory instead of the allocator's history (its default threshold adapts upward).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    rows = []
    for setup in setups:
        for T in time_steps:
            code = (f"import json,sys; from bsnn.bench.memory import measure_one; "
                    f"print(json.dumps(measure_one({setup!r}, {T}, {batch_size}, {list(channels)}, {device!r})))")
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"{setup} T={T} failed:\n{proc.stderr[-2000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            log(rows[-1])
    desc = (f"{hardware(device)}; batch {batch_size}; conv net {list(channels)} on 3x32x32 "
            f"(first conv and classifier real, hidden convs binary except SpikingJelly OTTT)")
    return rows, desc
