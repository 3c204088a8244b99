"""PNG plots of a run folder (metrics.csv, ensemble.json), of benchmark CSVs and of ensemble reports,
with matplotlib's Agg backend."""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from ..errors import UserError, require

require("matplotlib", "plots", "plotting").use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["plot_run", "plot_csv", "plot_ensemble", "plot"]


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


def _y_scale(ax, ys: list[float], linthresh: float) -> None:
    """symlog when the values span decades (flip rates, gradient variances), else linear with an
    offset-free scientific axis: a narrow range keeps its tick labels either way."""
    mags = [abs(y) for y in ys if y]
    if mags and max(mags) / max(min(mags), linthresh) >= 100:
        ax.set_yscale("symlog", linthresh=max(linthresh, min(mags)))
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useOffset=False)


def _axes(ax, title, ylabel, ys, linthresh=None) -> None:
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))        # epochs are whole numbers
    if linthresh is not None:
        _y_scale(ax, ys, linthresh)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _lines(rows, keys, title, ylabel, path, labels, strip=""):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for k in keys:
        name = k.removeprefix(strip)
        ax.plot(*_series(rows, k), marker="o", ms=3, label=labels.get(name, name) or k)
    _axes(ax, title, ylabel, [])
    return _save(fig, path)


def _panels(rows, cols, panels, ylabel, linthresh, path, labels):
    """One panel per column prefix, one line per layer."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (prefix, title) in zip(axes[0], panels):
        ys = []
        for k in (c for c in cols if c.startswith(prefix)):
            xs, y = _series(rows, k)
            ys += y
            name = k.removeprefix(prefix)
            ax.plot(xs, y, marker="o", ms=3, label=labels.get(name, name))
        _axes(ax, title, ylabel, ys, linthresh)
    return _save(fig, path)


def _labels(run_dir: Path) -> dict[str, str]:
    """The run's layer labels (``layers.json``, written by ``bsnn train``); none for older runs."""
    from .labels import LABELS_FILE

    try:
        labels = json.loads((run_dir / LABELS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def plot_run(run_dir: str | Path) -> list[Path]:
    """accuracy.png, loss.png, and when recorded flip_rate.png, gradients.png, firing_rate.png,
    ensemble.png (from ensemble.json, written by ``bsnn ensemble``)."""
    run_dir = Path(run_dir)
    rows = _read(run_dir / "metrics.csv")
    cols, labels = list(rows[0]), _labels(run_dir)
    out = [_lines(rows, [c for c in ("train_acc", "test_acc") if c in cols], "accuracy", "accuracy",
                  run_dir / "accuracy.png", {}),
           _lines(rows, [c for c in ("train_loss", "test_loss") if c in cols], "loss", "loss",
                  run_dir / "loss.png", {})]
    if any(c.startswith("flip_") for c in cols):
        out.append(_panels(rows, cols, [("flip_step/", "mean flip rate per step"),
                                        ("flip_epoch/", "net sign change per epoch")],
                           "fraction of weights", 1e-6, run_dir / "flip_rate.png", labels))
    if any(c.startswith("grad_") for c in cols):
        out.append(_panels(rows, cols, [("grad_mean/", "gradient mean per binary layer"),
                                        ("grad_var/", "gradient variance per binary layer")],
                           "", 1e-12, run_dir / "gradients.png", labels))
    fire = [c for c in cols if c.startswith("fire/")]
    if fire:
        out.append(_lines(rows, fire, "firing rate per spiking layer (evaluation)", "spikes / neuron / step",
                          run_dir / "firing_rate.png", labels, strip="fire/"))
    if (run_dir / "ensemble.json").is_file():
        out += plot_ensemble(run_dir / "ensemble.json")
    return out


def plot_ensemble(path: str | Path) -> list[Path]:
    """An ensemble report (``bsnn ensemble``'s JSON) as one figure beside it: member and ensemble accuracy,
    agreement of members, membrane residue ξ/V_th per spiking layer."""
    from .ensemble import EnsembleReport

    path = Path(path)
    try:
        r = EnsembleReport.from_dict(json.loads(path.read_text()))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not an ensemble report ({type(e).__name__}: {e})") from None
    T, steps = r.time_steps, range(r.time_steps)
    fig, (acc, agr, xi) = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1, 1.3]})

    # members and ensemble
    member = [100 * a for a in r.member_acc]
    acc.bar(steps, member, width=0.6, color="tab:blue", alpha=0.75, label="member t alone")
    acc.plot(steps, [100 * a for a in r.cumulative_acc], "o-", color="tab:orange", label="mean of members 0..t")
    acc.axhline(100 * r.ensemble_acc, color="tab:red", ls="--", label=f"ensemble (all T): {100 * r.ensemble_acc:.1f}%")
    low = min(member + [100 * a for a in r.cumulative_acc])
    high = max(member + [100 * r.ensemble_acc])
    bottom, top = max(0.0, low - 0.5 * (high - low) - 2), min(100.0, high + 0.6 * (high - low) + 2)
    acc.set_ylim(bottom, top)
    if T <= 16:                              # values at the foot of the bars, clear of the lines
        for t, v in zip(steps, member):
            acc.text(t, bottom + 0.03 * (top - bottom), f"{v:.1f}", ha="center", fontsize=8 if T <= 6 else 6,
                     color="white")
    acc.set(title=f"accuracy of the T={T} members ({r.samples:,} samples)", xlabel="time step t (member)",
            ylabel="accuracy (%)")
    acc.legend(fontsize=8, loc="upper left", ncols=2)
    acc.grid(axis="y", alpha=0.3)

    # agreement heatmap
    a = [[100 * v for v in row] for row in r.agreement]
    lowest = min(min(row) for row in a)
    im = agr.imshow(a, cmap="viridis", vmin=lowest if lowest < 100 else 90, vmax=100)
    mid = (im.norm.vmin + im.norm.vmax) / 2
    if T <= 12:
        for i in steps:
            for j in steps:
                agr.text(j, i, f"{a[i][j]:.1f}", ha="center", va="center", fontsize=8 if T <= 8 else 6,
                         color="black" if a[i][j] > mid else "white")
    fig.colorbar(im, ax=agr, fraction=0.046, pad=0.04, label="same prediction (% of samples)")
    agr.set(title="agreement of members i and j", xlabel="member j (time step)", ylabel="member i (time step)")

    # membrane residue per layer
    if r.layers and r.layers[0].xi_mean is not None:
        x = range(len(r.layers))
        xi.errorbar(x, [v.xi_mean for v in r.layers], yerr=[v.xi_std for v in r.layers], fmt="o", capsize=4,
                    color="tab:purple", label="mean ± std over neurons, samples, t ≥ 1")
        xi.axhline(0, color="gray", lw=0.8)
        xi.axhline(1, color="tab:red", ls=":", lw=1, label="ξ = V_th (fires without input)")
        tilt = len(r.layers) > 4
        xi.set_xticks(list(x), [v.name for v in r.layers], rotation=45 if tilt else 0,
                      ha="right" if tilt else "center", fontsize=8)
        xi.set_xlim(-0.6, len(r.layers) - 0.4)
        xi.legend(fontsize=8, loc="lower right")
        xi.grid(axis="y", alpha=0.3)
    else:
        xi.text(0.5, 0.5, "no residue: T = 1" if T == 1 else "no neuron with a known residue",
                ha="center", va="center", transform=xi.transAxes)
        xi.set_xticks([])
        xi.set_yticks([])
    kinds = sorted({v.kind for v in r.layers})
    xi.set(title="membrane residue ξ / V_th per spiking layer", ylabel="ξ / V_th (leaked from earlier steps)",
           xlabel="spiking layer (module name" + (f", {kinds[0]})" if len(kinds) == 1 else ")"))
    for axis in (acc.xaxis, agr.xaxis, agr.yaxis):       # integer time steps
        if T <= 16:
            axis.set_ticks(list(steps))
        else:
            axis.set_major_locator(MaxNLocator(integer=True))
    return [_save(fig, path.with_suffix(".png"))]


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
    """Plot a run folder (:func:`plot_run`), a benchmark ``.csv`` (:func:`plot_csv`) or an ensemble
    ``.json`` (:func:`plot_ensemble`); returns the PNG files written."""
    target = Path(target)
    if target.is_dir():
        return plot_run(target)
    if target.suffix == ".csv" and target.is_file():
        return plot_csv(target)
    if target.suffix == ".json" and target.is_file():
        return plot_ensemble(target)
    raise UserError(f"{target}: expected a run folder (with metrics.csv), a benchmark .csv or an ensemble .json")
