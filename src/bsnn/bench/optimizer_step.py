"""Cost of one optimizer step on VGG-11's binary tensors (9,216,000 weights), against references.

Rows: bsnn BSO and T-BSO (eager ``foreach`` kernels; ``fused=True``: one ``torch.compile``-d pass; the
default ``fused=None``, which compiles for groups this large), the same update written the
straightforward way (one tensor at a time, v kept on the CPU and read back every step, as the reference
code is structured), ``torch.optim.SGD`` with momentum on the same tensors, and the memory-bandwidth floor: the bytes the
update must move (read w, m, g; write w, m: 20 B per weight) divided by the measured copy bandwidth.
"""
from __future__ import annotations

import statistics
import time

import torch

from ..nn import BinaryParameter
from ..optim import BSO, TBSO
from .report import hardware

__all__ = ["VGG11_BINARY_SHAPES", "run", "reference_tbso_step"]

# The 7 binary 3x3 convs of the BSO paper's VGG-11 (first conv and classifier are real-valued).
VGG11_BINARY_SHAPES = [(128, 64, 3, 3), (256, 128, 3, 3), (256, 256, 3, 3), (512, 256, 3, 3),
                       (512, 512, 3, 3), (512, 512, 3, 3), (512, 512, 3, 3)]


def reference_tbso_step(params, grads, momenta, v_cpu, t, beta1=0.999, beta2=0.99999, thr=5e-7):
    """Structured like the reference code: a Python loop, v on the CPU (host-device traffic each step)."""
    for p, g, m, v in zip(params, grads, momenta, v_cpu):
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v[t] = beta2 * v[t] + (1 - beta2) * float((g * g).mean())
        r = -torch.sign(p * m / (v[t] ** 0.5 + 1e-10) - thr)
        p.copy_(torch.sign(r * p))


def _time(fn, device, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def copy_bandwidth(numel: int, device: torch.device, repeats: int = 10) -> float:
    """Bytes read + written per second by ``dst.copy_(src)`` on ``numel`` float32 values."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    t = _time(lambda: dst.copy_(src), device, repeats)
    return 2 * 4 * numel / t


def run(device: str = "auto", repeats: int = 20, shapes=VGG11_BINARY_SHAPES, log=print) -> tuple[list[dict], str]:
    """Time one step of every update on binary tensors of ``shapes``.

    Returns one row per update (ms/step, effective GB/s, share of the copy bandwidth) and a one-line
    description of the hardware and the setup."""
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    numel = sum(torch.Size(s).numel() for s in shapes)

    def binary_params():
        ps = [BinaryParameter(torch.where(torch.rand(s, device=dev) < 0.5, -1.0, 1.0)) for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p) * 1e-3
        return ps

    floor_bw = copy_bandwidth(numel, dev)
    needed = 20 * numel
    candidates = []                                   # (name, one step, note)
    for fused in (False, True, None):
        kind = {False: "eager foreach", True: "fused=True, torch.compile", None: "default: fused=None"}[fused]
        opt = BSO(binary_params(), threshold=5e-7, fused=fused, foreach=True)
        candidates.append((f"bsnn BSO ({kind})", opt.step, ""))
        opt_t = TBSO(binary_params(), threshold=5e-7, time_steps=4, fused=fused, foreach=True)
        candidates.append((f"bsnn T-BSO ({kind})", lambda o=opt_t: o.step(t=1), ""))
    opt_u = TBSO(binary_params(), threshold=5e-7, time_steps=4, skip_nonfinite=False)
    candidates.append(("bsnn T-BSO (default, skip_nonfinite=False)", lambda: opt_u.step(t=1),
                       "without the non-finite check (T-BSO's: its mean(G²), computed for v[t] anyway)"))
    ps = binary_params()
    momenta, v_cpu = [torch.zeros_like(p) for p in ps], [torch.zeros(4) for _ in ps]

    @torch.no_grad()
    def reference():
        reference_tbso_step(ps, [p.grad for p in ps], momenta, v_cpu, 1)
    candidates.append(("per-tensor loop, v on CPU (reference structure)", reference, ""))
    sgd_ps = [torch.nn.Parameter(p.detach().clone()) for p in binary_params()]
    for p in sgd_ps:
        p.grad = torch.randn_like(p) * 1e-3
    sgd = torch.optim.SGD(sgd_ps, lr=0.1, momentum=0.9, foreach=True)
    candidates.append(("torch.optim.SGD momentum (foreach)", sgd.step, ""))

    # Interleaved: every round times one step of each update, so that a drift in the machine's memory
    # bandwidth (large on shared machines) hits all alike; ratios to SGD are medians of per-round ratios.
    times = {name: [] for name, _, _ in candidates}
    for name, fn, _ in candidates:
        fn()                                          # warm-up, compilation
    for _ in range(repeats):
        for name, fn, _ in candidates:
            times[name].append(_time(fn, dev, 1, warmup=False))
    sgd_name = candidates[-1][0]
    rows = []
    for name, _, note in candidates:
        seconds = statistics.median(times[name])
        ratio = statistics.median(a / b for a, b in zip(times[name], times[sgd_name]))
        rows.append({"update": name, "ms/step": round(1000 * seconds, 2), "vs SGD": f"{ratio:.2f}x",
                     "effective GB/s": round(needed / seconds / 1e9, 1),
                     "share of copy bandwidth": f"{needed / seconds / floor_bw:.2f}", "note": note})
        log(rows[-1])
    rows.append({"update": "bandwidth floor", "ms/step": round(1000 * needed / floor_bw, 2), "vs SGD": "",
                 "effective GB/s": round(floor_bw / 1e9, 1), "share of copy bandwidth": "1.00",
                 "note": f"copy bandwidth {floor_bw / 1e9:.1f} GB/s"})
    ratios = ", ".join(f"{r['update']} {r['vs SGD']}" for r in rows if "T-BSO" in r["update"])
    desc = (f"{hardware(dev.type)}; {len(shapes)} tensors, {numel:,} binary weights; median of {repeats} "
            f"interleaved rounds after one warm-up (compilation) step; relative to SGD momentum (median of "
            f"per-round ratios): {ratios}")
    return rows, desc
