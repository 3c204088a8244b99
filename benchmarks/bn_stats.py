"""BatchNorm running statistics shared by the T steps vs one set per step (``model.bn_stats``).

    python benchmarks/bn_stats.py --data ../shared/data          # every setting below
    python benchmarks/bn_stats.py --only early_cue_online digits

Each setting trains twice from the same seed, once per ``bn_stats``, and reports the test accuracy in
eval mode (running statistics), with BatchNorm normalising by each test batch's own statistics, the
gap between the two, and the accuracy of every time step alone. In online training the forward pass in
training mode is the same for both (each step is normalised by its own batch statistics), so the
weights are the same and only the statistics used in evaluation differ; in BPTT, shared statistics are
computed over all T steps at once in training too. Writes a markdown table to stdout.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bsnn.bench.report import hardware, markdown_table
from bsnn.config import resolve
from bsnn.errors import UserError
from bsnn.recipes import load_recipe
from bsnn.train import build_data, build_trainer

BPTT = ["method.name=bptt", "optim.name=adam", "optim.lr=0.001"]
EARLY_CUE = ["data.name=early_cue", "data.samples=3000", "data.quiet=0.2", "model.hidden=[256,256]"]
SETTINGS = {       # name -> (recipe, overrides, needs data file)
    "early_cue_online": ("digits_tbso", [*EARLY_CUE, "train.epochs=10"], None),
    "early_cue_bptt": ("digits_tbso", [*EARLY_CUE, "train.epochs=10", *BPTT], None),
    "digits": ("digits_tbso", [], None),
    "digits_bptt": ("digits_tbso", BPTT, None),
    "nmnist": ("nmnist_tbso", ["train.epochs=15"], "nmnist_small"),
    "mnist": ("mnist_tbso", ["train.epochs=2"], "mnist.npz"),
}


def run(recipe: str, overrides: list[str], bn: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = resolve(load_recipe(recipe), [*overrides, f"model.bn_stats={bn}", "train.progress=false"])
        trainer = build_trainer(cfg, out_dir=Path(out), bundle=build_data(cfg), log=lambda *a: None)
        history = trainer.fit()
        res = trainer.last_evaluation
    return {"train_loss": history[-1]["train_loss"], "eval": res.accuracy, "batch": res.bn_batch_accuracy,
            "checked": res.bn_eval_accuracy, "steps": res.step_accuracy}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder with mnist.npz and nmnist_small/ (the extracted N-MNIST subset); "
                                  "settings whose file is missing are skipped")
    p.add_argument("--only", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = p.parse_args()
    rows = []
    try:
        for name in args.only:
            recipe, overrides, file = SETTINGS[name]
            if file:
                if not args.data or not (Path(args.data) / file).exists():
                    print(f"skip {name}: needs --data with {file}", file=sys.stderr)
                    continue
                overrides = [f"data.root={Path(args.data) / file}", *overrides]
            for bn in ("shared", "per_step"):
                print(f"== {name} bn_stats={bn}", file=sys.stderr, flush=True)
                r = run(recipe, overrides, bn)
                rows.append({"setting": name, "bn_stats": bn, "final train loss": f"{r['train_loss']:.4f}",
                             "test acc (eval) %": f"{100 * r['eval']:.2f}",
                             "checked batches: eval %": f"{100 * r['checked']:.2f}",
                             "batch stats %": f"{100 * r['batch']:.2f}",
                             "gap (points)": f"{100 * (r['batch'] - r['checked']):+.2f}",
                             "each step alone %": " ".join(f"{100 * a:.1f}" for a in r["steps"])})
                print(rows[-1], file=sys.stderr, flush=True)
    except UserError as e:
        print(f"bn_stats: {e}", file=sys.stderr)
        if not rows:
            return 2
    print(f"BatchNorm statistics shared vs per time step; {hardware()}\n")
    print(markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
