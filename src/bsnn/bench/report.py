"""Hardware description, markdown tables and CSV output shared by the benchmarks."""
from __future__ import annotations

import csv
import os
import platform
from pathlib import Path

import torch

__all__ = ["hardware", "markdown_table", "write_csv"]


def hardware(device: str = "cpu") -> str:
    """One line naming the GPU (with CUDA and torch versions) or the CPU (with thread count) for ``device``."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} threads ({os.cpu_count()} CPUs visible), torch {torch.__version__}"


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as a Markdown table; ``columns`` defaults to the keys of the first row."""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Write rows of dicts to ``path`` as CSV, the header being the union of their keys in first-seen order."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
