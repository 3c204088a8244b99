"""PNG plots of a run folder (metrics.csv) and of benchmark CSVs, with matplotlib's Agg backend."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..errors import UserError  # noqa: E402

__all__ = ["plot_run", "plot_csv", "plot"]


def _read(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if not rows:
        raise UserError(f"{path} has no rows")
    return rows


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        x, y = _num(r.get("epoch")), _num(r.get(key))
        if x is not None and y is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _lines(rows, keys, title, ylabel, path, log=False, strip=""):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for k in keys:
        xs, ys = _series(rows, k)
        ax.plot(xs, ys, marker="o", ms=3, label=k.removeprefix(strip) or k)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    if log:
        ax.set_yscale("symlog", linthresh=1e-6)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _panels(rows, cols, panels, ylabel, linthresh, path):
    """One panel per column prefix, one line per layer (symlog y)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (prefix, title) in zip(axes[0], panels):
        for k in (c for c in cols if c.startswith(prefix)):
            ax.plot(*_series(rows, k), marker="o", ms=3, label=k.removeprefix(prefix))
        ax.set(title=title, xlabel="epoch", ylabel=ylabel)
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_run(run_dir: str | Path) -> list[Path]:
    """accuracy.png, loss.png, and when recorded flip_rate.png, gradients.png, firing_rate.png."""
    run_dir = Path(run_dir)
    rows = _read(run_dir / "metrics.csv")
    cols = list(rows[0])
    out = [_lines(rows, [c for c in ("train_acc", "test_acc") if c in cols], "accuracy", "accuracy",
                  run_dir / "accuracy.png"),
           _lines(rows, [c for c in ("train_loss", "test_loss") if c in cols], "loss", "loss",
                  run_dir / "loss.png")]
    if any(c.startswith("flip_") for c in cols):
        out.append(_panels(rows, cols, [("flip_step/", "mean flip rate per step"),
                                        ("flip_epoch/", "net sign change per epoch")],
                           "fraction of weights", 1e-6, run_dir / "flip_rate.png"))
    if any(c.startswith("grad_") for c in cols):
        out.append(_panels(rows, cols, [("grad_mean/", "gradient mean per binary layer"),
                                        ("grad_var/", "gradient variance per binary layer")],
                           "", 1e-12, run_dir / "gradients.png"))
    fire = [c for c in cols if c.startswith("fire/")]
    if fire:
        out.append(_lines(rows, fire, "firing rate per spiking layer (evaluation)", "spikes / neuron / step",
                          run_dir / "firing_rate.png", strip="fire/"))
    return out


def plot_csv(path: str | Path) -> list[Path]:
    """A benchmark CSV with columns ``method``, ``T`` and numeric columns: one panel per numeric column."""
    path = Path(path)
    rows = _read(path)
    if "method" not in rows[0] or "T" not in rows[0]:
        raise UserError(f"{path}: expected a benchmark CSV with 'method' and 'T' columns")
    numeric = [c for c in rows[0] if c not in ("method", "T") and _num(rows[0][c]) is not None]
    by_method = defaultdict(list)
    for r in rows:
        by_method[r["method"]].append(r)
    ncols = min(3, len(numeric))
    nrows = -(-len(numeric) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(numeric):]:
        ax.set_visible(False)
    for ax, col in zip(axes.flat, numeric):
        for method, rs in by_method.items():
            ax.plot([_num(r["T"]) for r in rs], [_num(r[col]) for r in rs], marker="o", label=method)
        ax.set(title=col, xlabel="time steps T")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return [_save(fig, path.with_suffix(".png"))]


def plot(target: str | Path) -> list[Path]:
    target = Path(target)
    if target.is_dir():
        return plot_run(target)
    if target.suffix == ".csv" and target.is_file():
        return plot_csv(target)
    raise UserError(f"{target}: expected a run folder (with metrics.csv) or a benchmark .csv")
