"""What a packed file holds, layer by layer, and its real size next to the summary's (no torch)."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from .format import read, tensor_keys

__all__ = ["file_report", "FileReport"]


class FileReport:
    """A packed file's contents per node that holds tensors (binary weights, real values, bytes stored),
    its size and its header size, read from ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.desc, tensors = read(self.path)
        self.bytes = self.path.stat().st_size
        with open(self.path, "rb") as f:
            self.header_bytes = 8 + struct.unpack("<Q", f.read(8))[0]
        self.rows = []
        for n in self.desc["nodes"]:
            keys = [f"{n['name']}.{k}" for k in tensor_keys(n) if f"{n['name']}.{k}" in tensors]
            if not keys:
                continue
            binary = real = stored = 0
            for k in keys:
                t = tensors[k]
                stored += t.nbytes
                if t.dtype == np.uint8:
                    binary += len(t) * (n["in_features"] if n["op"] == "linear" else
                                        n["in_channels"] * n["kernel"][0] * n["kernel"][1])
                else:
                    real += t.size
            self.rows.append((n["name"], n["op"] + (" (binary)" if n.get("binary") else ""), binary, real, stored))

    @property
    def summary_bytes(self) -> float | None:
        """The model summary's size in bytes recorded in the file (``summary_bits / 8``), or None."""
        bits = self.desc.get("summary_bits")
        return None if bits is None else bits / 8

    def table(self) -> str:
        """The report as a plain-text table: one line per node, then the run facts and :meth:`size_line`."""
        head = f"{'layer':28s} {'op':18s} {'binary':>10s} {'real':>9s} {'bytes':>11s}"
        lines = [head, "-" * len(head)]
        for name, op, b, r, s in self.rows:
            lines.append(f"{name[:28]:28s} {op:18s} {b:>10,} {r:>9,} {s:>11,}")
        lines.append("-" * len(head))
        d = self.desc
        lines.append(f"T={d['time_steps']}, input {'x'.join(map(str, d['input_shape']))}"
                     f"{' per step (temporal)' if d.get('temporal') else ''}, real tensors {d.get('real_dtype')}")
        lines.append(self.size_line())
        return "\n".join(lines)

    def size_line(self) -> str:
        """One line: the file's size and header size, and their ratio to the summary size when known."""
        s = self.summary_bytes
        line = (f"file {self.path.name}: {self.bytes:,} bytes ({self.bytes / 1e6:.4f} MB; "
                f"header {self.header_bytes:,} bytes)")
        if s:
            line += (f"; summary size {s:,.0f} bytes ({s / 1e6:.4f} MB, binary at 1 bit, real at 32 bit): "
                     f"file/summary {self.bytes / s:.4f}, without header {(self.bytes - self.header_bytes) / s:.4f}")
        return line


def file_report(path: str | Path) -> FileReport:
    """The :class:`FileReport` of the packed file at ``path``."""
    return FileReport(path)
