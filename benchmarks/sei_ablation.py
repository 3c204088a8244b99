"""SEI-BWSNN ablation on this machine: what multiple shortcuts and per-step distillation do.

    python benchmarks/sei_ablation.py --mnist ../shared/data/mnist.npz --nmnist local/nmnist_small \
        --cifar ../shared/data/cifar10_jpeg.npz

(a) MNIST and the N-MNIST subset, seeds 0-2, one CPU-sized SEI ResNet (16-32-64, BPTT, per-step CE):
    * ``BWSNN`` — binary weights, one shortcut per two-conv block (a plain pre-activation ResNet);
    * ``+ shortcuts`` — a real-valued shortcut around every binary conv (``shortcut=per_layer``);
    * ``+ distill`` — per-step soft distillation (α=0.5, τ=1) from the full-precision twin below;
    * ``+ both``;
    * ``FP twin`` — the same network with full-precision weights (per-layer shortcuts), trained first
      by this script for each seed; its checkpoint is the teacher of that seed's distillation runs.
(b) the CIFAR-10 JPEG pack, seed 0, each run a fixed budget of training batches (and evaluation on the
    first 64 x that many test images): the tiny QKFormer
    with a binary vs a full-precision FFN, the tiny SEI ResNet with per-layer vs no shortcuts, and the
    project's conv net (32-64-128) trained online with T-BSO and with BPTT + STE.

Each run is its own process (its peak RSS is its own). Reported: test accuracy, per-step member accuracy
and the ensemble's (``bsnn.measure.ensemble``), flip rate per optimizer step, firing rate, peak RSS and
training time. One JSON line per run, then markdown tables (mean ± std over seeds); ``--reuse LOG``
skips runs printed by an earlier, interrupted invocation.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = ["model.widths=[16,32,64]", "model.stem=small"]
VARIANTS = {
    "FP twin": ["model.binary=false", "model.shortcut=per_layer"],
    "BWSNN": ["model.shortcut=block"],
    "+ shortcuts": ["model.shortcut=per_layer"],
    "+ distill": ["model.shortcut=block", "distill.name=soft", "distill.alpha=0.5"],
    "+ both": ["model.shortcut=per_layer", "distill.name=soft", "distill.alpha=0.5"],
}
RECIPES = {"mnist": "sei_mnist_resnet_tiny", "nmnist": "sei_nmnist_resnet_tiny"}
CONVNET_CIFAR = ["model.name=convnet", "model.channels=[32,64,128]", "model.head=flatten", "method.time_steps=2",
                 "distill.name=none"]
CIFAR = {
    "qkformer_tiny, binary FFN": ("sei_cifar10_qkformer_tiny", []),
    "qkformer_tiny, FP FFN": ("sei_cifar10_qkformer_tiny", ["model.binary_scope=none"]),
    "sei_resnet_tiny, per-layer shortcuts": ("sei_cifar10_resnet_tiny", []),
    "sei_resnet_tiny, no shortcuts": ("sei_cifar10_resnet_tiny", ["model.shortcut=none"]),
    "convnet, online T-BSO": ("sei_cifar10_resnet_tiny", [*CONVNET_CIFAR, "method.name=online", "optim.name=tbso",
                                                          "optim.lr=0.1", "optim.threshold=5e-7",
                                                          "optim.beta1=0.9999"]),
    "convnet, BPTT + STE": ("sei_cifar10_resnet_tiny", [*CONVNET_CIFAR]),
}


def child(dataset: str, root: str, variant: str, seed: int, epochs: int, work: str, batches: int = 0) -> dict:
    import warnings

    import torch

    from bsnn.config import resolve
    from bsnn.data import make_loader
    from bsnn.measure import ensemble, peak_rss_bytes
    from bsnn.recipes import load_recipe
    from bsnn.train import build_trainer

    if dataset == "cifar10":
        recipe, extra = CIFAR[variant]
    else:
        recipe, extra = RECIPES[dataset], [*TINY, *VARIANTS[variant]]
        if "distill.name=soft" in extra:
            extra.append(f"distill.teacher={Path(work) / f'{dataset}-fp-{seed}' / 'checkpoint.pt'}")
    out = Path(work) / f"{dataset}-{'fp' if variant == 'FP twin' else 'run'}-{seed}"
    over = [f"data.root={root}", f"train.seed={seed}", f"train.epochs={epochs}", "train.progress=false",
            f"train.checkpoint={'true' if variant == 'FP twin' else 'false'}", *extra]
    if batches:     # caps training and evaluation batches alike (CIFAR-10: the first 64 x batches test images)
        over += [f"train.limit_batches={batches}"] + (["data.test_batch_size=64"] if dataset == "cifar10" else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = resolve(load_recipe(recipe), over)
    trainer = build_trainer(cfg, out_dir=out, log=lambda *a: None)
    t0 = time.perf_counter()
    hist = trainer.fit()
    wall = time.perf_counter() - t0
    loader = make_loader(trainer.data.test, 256, False, 0, 0, 0)
    rep = ensemble(trainer.net, loader, trainer.method, max_batches=8 if dataset == "cifar10" else None)
    last = hist[-1]
    mean = lambda prefix: statistics.mean(v for k, v in last.items() if k.startswith(prefix)) \
        if any(k.startswith(prefix) for k in last) else None  # noqa: E731
    return {"dataset": dataset, "variant": variant, "seed": seed, "epochs": epochs, "batches": batches,
            "test_acc": last["test_acc"], "member_acc": rep.member_acc, "ensemble_acc": rep.ensemble_acc,
            "flip_step": mean("flip_step/"), "fire": mean("fire/"),
            "teacher_time_s": last.get("teacher_time_s"), "peak_rss_mib": peak_rss_bytes() / 2 ** 20,
            "train_time_s": sum(r["train_time_s"] for r in hist), "wall_s": wall,
            "params": sum(p.numel() for p in trainer.net.parameters()), "torch_threads": torch.get_num_threads()}


def fmt(values, scale=1.0, digits=2):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.mean(values) * scale
    s = (statistics.stdev(values) * scale) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def table(rows, keys):
    out = []
    for key in keys:
        rs = [r for r in rows if (r["dataset"], r["variant"]) == key]
        if not rs:
            continue
        T = len(rs[0]["member_acc"])
        members = " / ".join(fmt([r["member_acc"][t] for r in rs], 100, 1) for t in range(min(T, 4)))
        out.append({"dataset": rs[0]["dataset"], "variant": key[1], "seeds": len(rs), "T": T,
                    "test acc %": fmt([r["test_acc"] for r in rs], 100),
                    "member acc % (t = 1, 2, ...; first 4)": members,
                    "ensemble acc %": fmt([r["ensemble_acc"] for r in rs], 100),
                    "flip rate / step (‰)": fmt([r["flip_step"] for r in rs], 1000, 3),
                    "firing rate": fmt([r["fire"] for r in rs], 1, 3),
                    "peak RSS MiB": fmt([r["peak_rss_mib"] for r in rs], 1, 0),
                    "train time s": fmt([r["train_time_s"] for r in rs], 1, 0)})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mnist", help="MNIST .npz or torchvision root")
    p.add_argument("--nmnist", help="extracted N-MNIST folder (Train/, Test/)")
    p.add_argument("--cifar", help="CIFAR-10 JPEG pack (.npz)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--mnist-epochs", type=int, default=1)
    p.add_argument("--mnist-batches", type=int, default=200, help="training batches (of 128) per MNIST epoch")
    p.add_argument("--nmnist-epochs", type=int, default=3)
    p.add_argument("--cifar-batches", type=int, default=60, help="training batches (of 64) per CIFAR-10 run")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--cifar-runs", nargs="+", default=list(CIFAR), choices=list(CIFAR))
    p.add_argument("--work", help="folder for the FP twins' checkpoints (default: a temporary folder)")
    p.add_argument("--csv", default="sei_ablation.csv")
    p.add_argument("--reuse", help="earlier output of this script: its JSON run lines are not run again")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(**json.loads(args.child))))
        return 0
    work = args.work or tempfile.mkdtemp(prefix="sei_ablation_")
    plan = []
    if args.mnist:
        plan += [("mnist", args.mnist, v, s, args.mnist_epochs, args.mnist_batches)
                 for s in args.seeds for v in args.variants]
    if args.cifar:
        plan += [("cifar10", args.cifar, v, 0, 1, args.cifar_batches) for v in args.cifar_runs]
    if args.nmnist:
        plan += [("nmnist", args.nmnist, v, s, args.nmnist_epochs, 0) for s in args.seeds for v in args.variants]
    if not plan:
        p.error("give --mnist, --nmnist and/or --cifar")
    done = {}
    if args.reuse:
        for line in open(args.reuse):
            if line.startswith("{"):
                r = json.loads(line)
                done[r["dataset"], r["variant"], r["seed"]] = r
    rows = []
    for dataset, root, variant, seed, epochs, batches in plan:
        if (dataset, variant, seed) in done:
            rows.append(done[dataset, variant, seed])
        else:
            spec = json.dumps({"dataset": dataset, "root": root, "variant": variant, "seed": seed, "epochs": epochs,
                               "work": work, "batches": batches})
            proc = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    from bsnn.bench.report import hardware, markdown_table, write_csv

    write_csv([{k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()} for r in rows], args.csv)
    print(f"\n{hardware()}; seeds {args.seeds}; mean ± std over seeds\n")
    keys = list(dict.fromkeys((r["dataset"], r["variant"]) for r in rows))
    print(markdown_table(table(rows, keys)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
