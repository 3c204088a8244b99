"""The ``bsnn`` command line: ``train``, ``eval``, ``recipes``.

Bad input (unknown recipe, key or value, missing dataset) prints one line and exits with status 2
before anything is written.
"""
from __future__ import annotations

import argparse
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
    atomic_write_text(yaml.safe_dump(cfg, sort_keys=False), out / "config.yaml")
    print(f"run {cfg['name']} -> {out}")
    _report_model(trainer.model)
    t0 = time.perf_counter()
    history = trainer.fit(resume=args.resume)
    train_s = sum(r["train_time_s"] for r in history[trainer.start_epoch:])
    last = history[-1]
    print(f"done: test accuracy {100 * last['test_acc']:.2f}% after {last['epoch']} epochs; "
          f"training time {train_s:.1f} s (wall {time.perf_counter() - t0:.1f} s incl. evaluation)")
    _report_model(trainer.model)
    return 0


def cmd_eval(args) -> int:
    from .config import apply_overrides, validate
    from .train import build_trainer
    from .train import checkpoint as ckpt

    path = Path(args.checkpoint)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        state = ckpt.load(path)
        cfg = state["config"]
    except Exception as e:  # a file that is not our checkpoint
        raise UserError(f"{path} is not a bsnn checkpoint ({type(e).__name__}: {e})") from None
    cfg = validate(apply_overrides(cfg, ["train.progress=false", *args.set]))
    trainer = build_trainer(cfg, out_dir=None, log=lambda *a: None)
    trainer.model.load_state_dict(state["model"])
    res = trainer.evaluate()
    print(f"{cfg['name']} (epoch {state['epoch']}): test accuracy {100 * res['test_acc']:.2f}%  "
          f"loss {res['test_loss']:.4f}")
    _report_model(trainer.model)
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
