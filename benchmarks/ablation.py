"""Ablation on one small network: BPTT+STE, BPTT+STE+AGMM (Adam; three AGMM settings and a half-LR control under SGD),
online T-BSO, full-precision BPTT.

    python benchmarks/ablation.py --mnist ../shared/data/mnist.npz --nmnist local/nmnist_small

For each dataset, method and seed, one training run in its own process (so its peak RSS is its own):
final test accuracy, flip rates of the binary weights (mean fraction per optimizer step, and the net
change over the last epoch), mean firing rate of the spiking layers (evaluation), peak RSS and training
time. Prints one JSON line per run, then mean ± std over seeds as a markdown table, and writes all runs
to a CSV. ``--reuse LOG`` takes the runs already printed in an earlier (interrupted) run's output.

Same network everywhere: conv net 16-32-64 (first conv and classifier real, hidden convs binary),
LIF τ=2, Vth=1, sigmoid surrogate α=4, soft reset; BPTT variants use Adam (lr 1e-3) on latent weights
with sign + clipped STE, or Q-SNN's SGD (lr 0.1, momentum 0.9, weight decay 1e-4); AGMM uses the
reconstruction's defaults (``bsnn.nn.AGMM``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SGD = ["optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9", "optim.weight_decay=0.0001"]
METHODS = {
    "BPTT + STE": ["method.name=bptt", "optim.name=adam", "optim.lr=0.001"],
    "BPTT + STE + AGMM": ["method.name=bptt", "optim.name=adam", "optim.lr=0.001", "model.agmm={where: bn_out}"],
    "online T-BSO": [],
    "FP BPTT": ["method.name=bptt", "optim.name=adam", "optim.lr=0.001", "model.binary=false"],
    # Adam divides out any gradient scale, so AGMM is also tried under Q-SNN's SGD (specs/agmm.md §1.2, §3)
    "BPTT + STE, SGD": ["method.name=bptt", *SGD],
    "BPTT + STE + AGMM, SGD": ["method.name=bptt", *SGD, "model.agmm={where: bn_out}"],
    "BPTT + STE + AGMM backward, SGD": ["method.name=bptt", *SGD, "model.agmm={where: bn_out, mode: backward}"],
    "BPTT + STE + AGMM step_mean, SGD": ["method.name=bptt", *SGD, "model.agmm={where: bn_out, statistic: step_mean}"],
    # control: is a gate below 1 just a smaller step? (SGD at half the learning rate, no AGMM)
    "BPTT + STE, SGD lr/2": ["method.name=bptt", *SGD, "optim.lr=0.05"],
}
DATASETS = {"mnist": "mnist_tbso", "nmnist": "nmnist_tbso"}
TBSO_ONLY = ("optim.threshold", "optim.beta1", "optim.beta2", "schedule.flip")


def child(dataset: str, root: str, method: str, seed: int, epochs: int) -> dict:
    import warnings

    from bsnn.config import DEFAULTS, resolve
    from bsnn.measure import peak_rss_bytes
    from bsnn.recipes import load_recipe
    from bsnn.train import build_trainer

    recipe = load_recipe(DATASETS[dataset])
    over = [f"data.root={root}", f"train.seed={seed}", f"train.epochs={epochs}", "train.progress=false",
            "train.checkpoint=false", *METHODS[method]]
    if METHODS[method]:   # BPTT variants: drop the T-BSO-only settings of the recipe
        for key in TBSO_ONLY:
            sec, k = key.split(".")
            over.append(f"{key}={json.dumps(DEFAULTS[sec][k])}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = resolve(recipe, over)
    trainer = build_trainer(cfg, log=lambda *a: None)
    t0 = time.perf_counter()
    hist = trainer.fit()
    last = hist[-1]
    flips_step = [v for k, v in last.items() if k.startswith("flip_step/")]
    flips_epoch = [v for k, v in last.items() if k.startswith("flip_epoch/")]
    fire = [v for k, v in last.items() if k.startswith("fire/")]
    return {"dataset": dataset, "method": method, "seed": seed, "epochs": epochs,
            "test_acc": last["test_acc"],
            "flip_step": statistics.mean(flips_step) if flips_step else None,
            "flip_epoch": statistics.mean(flips_epoch) if flips_epoch else None,
            "fire": statistics.mean(fire) if fire else None,
            "peak_rss_mib": peak_rss_bytes() / 2 ** 20,
            "train_time_s": sum(r["train_time_s"] for r in hist), "wall_s": time.perf_counter() - t0}


def fmt(values, scale=1.0, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.mean(values) * scale
    s = (statistics.stdev(values) * scale) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", help="MNIST .npz or torchvision root")
    p.add_argument("--nmnist", help="extracted N-MNIST folder (Train/, Test/)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mnist-epochs", type=int, default=2)
    p.add_argument("--nmnist-epochs", type=int, default=15)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--csv", default="ablation.csv")
    p.add_argument("--reuse", help="earlier output of this script: its JSON run lines are not run again")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return 0
    runs = [(d, r, e) for d, r, e in (("mnist", args.mnist, args.mnist_epochs), ("nmnist", args.nmnist, args.nmnist_epochs))
            if r]
    if not runs:
        p.error("give --mnist and/or --nmnist")
    done = {}
    if args.reuse:
        for line in open(args.reuse):
            if line.startswith("{"):
                r = json.loads(line)
                done[r["dataset"], r["method"], r["seed"], r["epochs"]] = r
    rows = []
    for dataset, root, epochs in runs:
        for method in args.methods:
            for seed in args.seeds:
                if (dataset, method, seed, epochs) in done:
                    rows.append(done[dataset, method, seed, epochs])
                    print(json.dumps(rows[-1]), flush=True)
                    continue
                spec = json.dumps({"dataset": dataset, "root": root, "method": method, "seed": seed, "epochs": epochs})
                proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    return 1
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    from bsnn.bench.report import hardware, markdown_table, write_csv

    write_csv(rows, args.csv)
    table = []
    for dataset, _, epochs in runs:
        for method in args.methods:
            rs = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            table.append({"dataset": f"{dataset} ({epochs} ep)", "method": method,
                          "test acc %": fmt([r["test_acc"] for r in rs], 100),
                          "flip rate / step (‰)": fmt([r["flip_step"] for r in rs], 1000, 3),
                          "net flips last epoch %": fmt([r["flip_epoch"] for r in rs], 100),
                          "firing rate": fmt([r["fire"] for r in rs], 1, 3),
                          "peak RSS MiB": fmt([r["peak_rss_mib"] for r in rs], 1, 0),
                          "train time s": fmt([r["train_time_s"] for r in rs], 1, 0)})
    print(f"\n{hardware()}; seeds {args.seeds}; mean ± std over seeds\n")
    print(markdown_table(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
