"""The ``bsnn`` command line: ``train``, ``eval``, ``ensemble``, ``summary``, ``plot``, ``bench``, ``recipes``.

Bad input (unknown recipe, key or value, missing dataset) prints one line and exits with status 2
before anything is written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from .errors import UserError

__all__ = ["main"]


def _report_model(model, log=print) -> None:
    from .measure import count_parameters

    c = count_parameters(model)
    log(f"parameters: {c.binary:,} binary (1 bit) + {c.real:,} real (32 bit); "
        f"model size {c.bits:,} bits = {c.bits / 8e6:.4f} MB "
        f"({c.float32_bits / max(c.bits, 1):.1f}x smaller than float32)")


def cmd_train(args) -> int:
    from .config import resolve
    from .recipes import load_recipe
    from .train import build_trainer
    from .train.checkpoint import atomic_write_text
    from .train.distributed import world_size

    cfg = resolve(load_recipe(args.recipe), args.set)
    if args.out:
        out = Path(args.out)
    elif cfg["train"]["out_dir"]:
        out = Path(cfg["train"]["out_dir"])
    else:
        out = Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise UserError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    trainer = build_trainer(cfg, out_dir=out)       # validates data before anything is written
    say = print if trainer.main else (lambda *a, **k: None)
    if trainer.main:
        atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), out / "config.yaml")
    say(f"run {cfg['name']} -> {out}" + (f" ({world_size()} processes)" if world_size() > 1 else ""))
    _report_model(trainer.net, say)
    t0 = time.perf_counter()
    history = trainer.fit(resume=args.resume)
    train_s = sum(r["train_time_s"] for r in history[trainer.start_epoch:])
    last = history[-1]
    say(f"done: test accuracy {100 * last['test_acc']:.2f}% after {last['epoch']} epochs; "
        f"training time {train_s:.1f} s (wall {time.perf_counter() - t0:.1f} s incl. evaluation)")
    _report_model(trainer.net, say)
    return 0


def _load_checkpoint(path_text: str) -> dict:
    from .train import checkpoint as ckpt

    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = ckpt.load(path)
        state["config"], state["model"]  # noqa: B018  (both must be present)
    except Exception as e:  # a file that is not our checkpoint
        raise UserError(f"{path} is not a bsnn checkpoint ({type(e).__name__}: {e})") from None
    return state


def cmd_eval(args) -> int:
    from .config import apply_overrides, validate
    from .train import build_trainer

    state = _load_checkpoint(args.checkpoint)
    cfg = validate(apply_overrides(state["config"], ["train.progress=false", *args.set]))
    trainer = build_trainer(cfg, out_dir=None, log=lambda *a: None)
    trainer.net.load_state_dict(state["model"])
    res = trainer.evaluate()
    print(f"{cfg['name']} (epoch {state['epoch']}): test accuracy {100 * res['test_acc']:.2f}%  "
          f"loss {res['test_loss']:.4f}")
    _report_model(trainer.net)
    return 0


def _writable(path: Path) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {path}: {folder} is not a writable folder")


def cmd_ensemble(args) -> int:
    import json

    import torch

    from .config import apply_overrides, validate
    from .data import make_loader
    from .measure.ensemble import ensemble
    from .train.build import build_data, build_method, build_model, resolve_device, seed_everything
    from .train.checkpoint import atomic_write_text

    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    state = _load_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("ensemble.json")
    _writable(out)
    cfg = validate(apply_overrides(state["config"], args.set))
    device = resolve_device(cfg["train"]["device"])
    if cfg["train"]["threads"]:
        torch.set_num_threads(cfg["train"]["threads"])
    seed_everything(cfg["train"]["seed"])
    bundle = build_data(cfg)
    model = build_model(cfg, bundle).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise UserError(f"{args.checkpoint} does not fit its model ({str(e).splitlines()[0]})") from None
    loader = make_loader(bundle.test, cfg["data"]["test_batch_size"], shuffle=False,
                         num_workers=cfg["data"]["num_workers"])
    report = ensemble(model, loader, build_method(cfg, bundle, device), device=device, max_batches=args.batches)
    print(f"{cfg['name']} (epoch {state.get('epoch')}), test set")
    print(report.table())
    try:
        atomic_write_text(json.dumps(report.to_dict(), indent=1) + "\n", out)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out}")
    return 0


def cmd_summary(args) -> int:
    from . import models
    from .config import apply_overrides, resolve, validate
    from .measure.summary import summary
    from .recipes import load_recipe
    from .train import build_model

    x, temporal, note = None, False, "random inputs, uniform in [0, 1)"
    if args.recipe or args.checkpoint:
        from .data import dataset_info
        from .train import build_data

        if args.checkpoint:
            state = _load_checkpoint(args.checkpoint)
            cfg = validate(apply_overrides(state["config"], args.set))
        else:
            cfg = resolve(load_recipe(args.recipe), args.set)
        model = build_model(cfg)
        if args.checkpoint:
            model.load_state_dict(state["model"])
        info = dataset_info(cfg["data"]["name"])
        shape, temporal = info.input_shape, info.temporal
        T = args.time_steps or cfg["method"]["time_steps"]
        try:
            import torch
            test = build_data(cfg).test
            pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:args.batch_size]
            x = test[pick.tolist()][0]
            note = f"{len(x)} random test samples of {cfg['data']['name']}"
        except UserError as e:
            note += f" ({cfg['data']['name']} not loaded: {e})"
    else:
        from .config import parse_value
        if not args.model or not args.input_shape:
            raise UserError("summary needs --recipe NAME, --checkpoint PATH, or --model NAME with --input-shape C H W")
        if args.model not in models.list_models():
            raise UserError(f"unknown model {args.model!r}; known: {', '.join(models.list_models())}")
        kwargs = {}
        for item in args.set:
            if "=" not in item:
                raise UserError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            kwargs[k.removeprefix("model.")] = parse_value(v)
        shape = tuple(args.input_shape)
        params = models.model_signature(args.model).parameters
        c, *spatial = shape
        for k, v in (("in_channels", c), ("image_size", spatial[-1] if spatial else None),
                     ("in_features", int(__import__("math").prod(shape)))):
            if k in params and k not in kwargs and v is not None:
                kwargs[k] = v
        try:
            model = models.create(args.model, **kwargs)
        except (TypeError, ValueError) as e:
            raise UserError(f"model {args.model}: {e}") from None
        T = args.time_steps or 1
    print(summary(model, shape, T, x=x, batch_size=args.batch_size, temporal=temporal).table())
    print(f"firing rates and operations measured on {note}")
    return 0


def cmd_plot(args) -> int:
    from .measure.plots import plot

    for path in plot(args.target):
        print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import memory, optimizer_step, throughput
    from .bench.report import markdown_table, write_csv

    common = {"device": args.device}
    if args.kind == "memory":
        rows, desc = memory.run(time_steps=args.time_steps or (1, 2, 4, 8, 16), setups=args.setups,
                                batch_size=args.batch_size, channels=args.channels, **common)
    elif args.kind == "throughput":
        rows, desc = throughput.run(time_steps=args.time_steps or (1, 2, 4, 8), setups=args.setups,
                                    batch_size=args.batch_size, channels=args.channels,
                                    repeats=args.repeats, **common)
    else:
        rows, desc = optimizer_step.run(repeats=args.repeats, **common)
    print(f"\n{desc}\n\n{markdown_table(rows)}")
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}")
        if args.kind != "optimizer":
            from .measure.plots import plot_csv
            for path in plot_csv(args.csv):
                print(f"wrote {path}")
    return 0


def cmd_recipes(args) -> int:
    from .recipes import list_recipes, load_recipe

    for name in list_recipes():
        r = load_recipe(name)
        print(f"{name:32s} {r.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bsnn", description="Binary spiking neural networks.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("--recipe", required=True, help="recipe name (`bsnn recipes`) or a .yaml path")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.threshold=1e-6 (repeatable)")
    t.add_argument("--out", help="run folder (default: runs/<name>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.set_defaults(fn=cmd_train)
    e = sub.add_parser("eval", help="evaluate a checkpoint on its test set")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override, e.g. --set data.root=PATH")
    e.set_defaults(fn=cmd_eval)
    en = sub.add_parser("ensemble", help="a checkpoint as a self-ensemble of T binary networks (per-step "
                                         "accuracy, agreement, membrane residue)")
    en.add_argument("--checkpoint", required=True)
    en.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override, e.g. --set data.root=PATH")
    en.add_argument("--batches", type=int, metavar="N", help="measure on the first N test batches only")
    en.add_argument("--out", help="JSON report (default: ensemble.json next to the checkpoint)")
    en.set_defaults(fn=cmd_ensemble)
    s = sub.add_parser("summary", help="per-layer bits, sizes, firing rates and synaptic operations")
    s.add_argument("--recipe", help="summarise the recipe's model (untrained)")
    s.add_argument("--checkpoint", help="summarise a trained model (firing rates on its test data)")
    s.add_argument("--model", help="or: a registered model name")
    s.add_argument("--input-shape", type=int, nargs="+", metavar="N", help="e.g. 3 32 32 (with --model)")
    s.add_argument("--time-steps", "-T", type=int, help="time steps of the forward pass (recipe's by default)")
    s.add_argument("--batch-size", type=int, default=64, help="samples for firing rates and operations")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (with --recipe) or model option (with --model)")
    s.set_defaults(fn=cmd_summary)
    pl = sub.add_parser("plot", help="PNG plots of a run folder or a benchmark CSV")
    pl.add_argument("target", help="run folder (metrics.csv), benchmark .csv or ensemble .json")
    pl.set_defaults(fn=cmd_plot)
    b = sub.add_parser("bench", help="benchmarks: memory vs T, throughput, optimizer step")
    b.add_argument("kind", choices=["memory", "throughput", "optimizer"])
    b.add_argument("--time-steps", "-T", type=int, nargs="+")
    b.add_argument("--setups", nargs="+", default=["tbso", "bso", "sj_ottt", "bptt"],
                   choices=["tbso", "bso", "sj_ottt", "bptt"])
    b.add_argument("--batch-size", type=int, default=64)
    b.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256])
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--csv", help="write rows to this CSV (and a PNG plot beside it)")
    b.set_defaults(fn=cmd_bench)
    r = sub.add_parser("recipes", help="list the shipped recipes")
    r.set_defaults(fn=cmd_recipes)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"bsnn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bsnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
