"""Training memory versus the number of time steps T: online T-BSO vs BPTT on the same network.

    python benchmarks/memory_vs_T.py                     # T in 1 2 4 8 16, CPU or the GPU if present
    python benchmarks/memory_vs_T.py --batch-size 32 --csv mem.csv

Each (method, T) runs in its own process (peak RSS never goes down within a process) for a few
training batches of a conv net on 3x32x32 inputs and reports:
  saved MiB      largest amount of tensors saved for backward by one graph (saved-tensor hooks)
  persistent MiB parameters + gradients + optimizer state
  peak MiB       CUDA max allocated (GPU) or process peak RSS (CPU)
  increment MiB  peak minus the memory held just before the first batch
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import hardware, markdown_table  # noqa: E402

MIB = 2 ** 20


def child(method: str, T: int, batch: int, channels: list[int], device: str) -> dict:
    import torch

    from bsnn.measure import SavedTensorMeter, peak_rss_bytes, persistent_bytes
    from bsnn.models import create
    from bsnn.optim import TBSO
    from bsnn.train import BPTTMethod, OnlineMethod

    torch.manual_seed(0)
    dev = torch.device(device)
    model = create("convnet", in_channels=3, image_size=32, channels=channels, method=method).to(dev)
    if method == "online":
        opt, runner = TBSO(model.parameters(), time_steps=T), OnlineMethod(T)
    else:
        opt, runner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), BPTTMethod(T)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/statm") as f:
            base = int(f.read().split()[1]) * 4096
    meter = SavedTensorMeter()
    for _ in range(3):
        with meter.measure():
            runner.train_batch(model, x, y, opt)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = peak_rss_bytes()
    return {"method": "online T-BSO" if method == "online" else "BPTT (latent + SGD)", "T": T,
            "saved MiB": round(meter.peak / MIB, 2),
            "persistent MiB": round(persistent_bytes(model, opt)["persistent_bytes"] / MIB, 2),
            "peak MiB": round(peak / MIB, 1), "increment MiB": round((peak - base) / MIB, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--time-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--csv", help="also write the rows to this CSV file")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "T"), help=argparse.SUPPRESS)
    args = p.parse_args()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.batch_size, args.channels, device)))
        return 0
    rows = []
    for method in ("online", "bptt"):
        for T in args.time_steps:
            cmd = [sys.executable, __file__, "--child", method, str(T), "--batch-size", str(args.batch_size),
                   "--device", device, "--channels", *map(str, args.channels)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    print(f"\nHardware: {hardware()}; batch {args.batch_size}, conv net {args.channels} on 3x32x32\n")
    print(markdown_table(rows, list(rows[0])))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
