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


def _time(fn, device, repeats: int) -> float:
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

    rows = []
    floor_bw = copy_bandwidth(numel, dev)
    needed = 20 * numel

    def add(name, seconds, note=""):
        rows.append({"update": name, "ms/step": round(1000 * seconds, 2),
                     "effective GB/s": round(needed / seconds / 1e9, 1),
                     "share of copy bandwidth": f"{needed / seconds / floor_bw:.2f}", "note": note})
        log(rows[-1])

    for fused in (False, True, None):
        kind = {False: "eager foreach", True: "fused=True, torch.compile", None: "default: fused=None"}[fused]
        ps = binary_params()
        opt = BSO(ps, threshold=5e-7, fused=fused, foreach=True)
        add(f"bsnn BSO ({kind})", _time(lambda: opt.step(), dev, repeats))
        ps = binary_params()
        opt_t = TBSO(ps, threshold=5e-7, time_steps=4, fused=fused, foreach=True)
        add(f"bsnn T-BSO ({kind})", _time(lambda: opt_t.step(t=1), dev, repeats))
    ps = binary_params()
    opt_u = TBSO(ps, threshold=5e-7, time_steps=4, skip_nonfinite=False)
    add("bsnn T-BSO (default, skip_nonfinite=False)", _time(lambda: opt_u.step(t=1), dev, repeats),
        "without the non-finite gradient check (one min/max read of every gradient)")
    ps = binary_params()
    momenta = [torch.zeros_like(p) for p in ps]
    v_cpu = [torch.zeros(4) for _ in ps]
    with torch.no_grad():
        add("per-tensor loop, v on CPU (reference structure)",
            _time(lambda: reference_tbso_step(ps, [p.grad for p in ps], momenta, v_cpu, 1), dev, repeats))
    ps = [torch.nn.Parameter(p.detach().clone()) for p in binary_params()]
    for p in ps:
        p.grad = torch.randn_like(p) * 1e-3
    sgd = torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True)
    t_sgd = _time(lambda: sgd.step(), dev, repeats)
    add("torch.optim.SGD momentum (foreach)", t_sgd)
    add("bandwidth floor", needed / floor_bw, f"copy bandwidth {floor_bw / 1e9:.1f} GB/s")
    sgd_ms = rows[-2]["ms/step"]
    ratios = ", ".join(f"{r['update']} {r['ms/step'] / sgd_ms:.2f}x" for r in rows if "T-BSO" in r["update"])
    desc = (f"{hardware(dev.type)}; {len(shapes)} tensors, {numel:,} binary weights; "
            f"median of {repeats} steps after one warm-up (compilation) step; time relative to SGD momentum: {ratios}")
    return rows, desc
