"""Full MNIST: T-BSO online conv net and its BPTT (latent weights + STE) baseline, accuracy and time.

    python benchmarks/mnist.py ../shared/data/mnist.npz               # both methods, recipe settings
    python benchmarks/mnist.py PATH --methods tbso --epochs 2          # quicker look

Runs the shipped recipes ``mnist_tbso`` and ``mnist_bptt`` (same network) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time

from bsnn.bench.report import hardware, markdown_table
from bsnn.config import resolve
from bsnn.errors import UserError
from bsnn.measure import count_parameters, peak_rss_bytes
from bsnn.recipes import load_recipe
from bsnn.train import build_data, build_trainer

RECIPES = {"tbso": "mnist_tbso", "bptt": "mnist_bptt"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="MNIST .npz or torchvision root")
    p.add_argument("--methods", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--epochs", type=int, help="override the recipes' epoch count")
    p.add_argument("--set", action="append", default=[], help="extra config override (repeatable)")
    args = p.parse_args()
    rows = []
    try:
        for method in args.methods:
            over = [f"data.root={args.data}", "train.progress=false", *args.set]
            if args.epochs:
                over.append(f"train.epochs={args.epochs}")
            cfg = resolve(load_recipe(RECIPES[method]), over)
            print(f"== {method}: recipe {RECIPES[method]}", flush=True)
            trainer = build_trainer(cfg, bundle=build_data(cfg))
            t0 = time.perf_counter()
            history = trainer.fit()
            wall = time.perf_counter() - t0
            c = count_parameters(trainer.model)
            rows.append({
                "method": method, "recipe": RECIPES[method], "T": cfg["method"]["time_steps"],
                "epochs": len(history), "test acc (final)": f"{100 * history[-1]['test_acc']:.2f}%",
                "test acc (best)": f"{100 * max(r['test_acc'] for r in history):.2f}%",
                "train time": f"{sum(r['train_time_s'] for r in history) / 60:.1f} min",
                "wall incl. eval": f"{wall / 60:.1f} min",
                "binary / real params": f"{c.binary:,} / {c.real:,}",
            })
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nHardware: {hardware()}; peak RSS of this process {peak_rss_bytes() / 2**20:.0f} MiB\n")
    print(markdown_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
