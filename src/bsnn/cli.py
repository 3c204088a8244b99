"""The ``bsnn`` command line: ``train``, ``eval``, ``ensemble``, ``summary``, ``export``, ``infer``, ``plot``,
``bench``, ``recipes``.

Bad input (unknown recipe, key or value, missing dataset, unreadable checkpoint) prints one line and
exits with status 2 before anything is written; a run stopped on non-finite values exits with 3
(README, "Guarantees").
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import yaml

from . import __version__
from .errors import UserError, one_line, short

__all__ = ["main"]


def _report_model(model, log=print) -> None:
    from .measure import count_parameters

    c = count_parameters(model)
    steps = f" + {c.step_stats:,} per-step BatchNorm values" if c.step_stats else ""
    log(f"parameters: {c.binary:,} binary (1 bit) + {c.real:,} real (32 bit){steps}; "
        f"model size {c.bits:,} bits = {c.bits / 8e6:.4f} MB "
        f"({c.float32_bits / max(c.bits, 1):.1f}x smaller than float32)")


@contextlib.contextmanager
def _deferred_warnings():
    """Hold back warnings while a command checks its input: an error then stays the only line, and
    otherwise each warning follows as one ``bsnn: warning:`` line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield
    for w in caught:
        print(f"bsnn: warning: {one_line(str(w.message))}", file=sys.stderr)


def _run_folder(args, cfg: dict) -> Path:
    """The run folder, checked (a folder, or creatable in a writable one) before anything is built."""
    if args.out is not None and not args.out.strip():
        raise UserError("--out must not be empty")
    if args.out:
        out = Path(args.out)
    elif cfg["train"]["out_dir"]:
        out = Path(cfg["train"]["out_dir"])
    elif args.resume:
        raise UserError("--resume needs --out (the folder of the run to continue)")
    else:
        out = Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    _writable(out, folder=True)
    if args.resume and not (out / "checkpoint.pt").is_file():
        raise UserError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
    if not args.resume and (out / "checkpoint.pt").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    return out


class RunLog:
    """``print`` that also appends to the run folder's ``train.log`` once the folder is known to be good
    (lines before that are kept and written then)."""

    FILE = "train.log"

    def __init__(self):
        self.pending: list[str] = []
        self.file = None

    def __call__(self, message: str = "") -> None:
        print(message, flush=True)
        if self.file is None:
            self.pending.append(message)
        else:
            self.file.write(f"{message}\n")
            self.file.flush()

    def attach(self, path: Path) -> None:
        """Also append every line to ``path`` (the run folder's log), starting with what was said so far."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        for line in self.pending:
            self.file.write(f"{line}\n")
        self.file.flush()
        self.pending = []


def cmd_train(args) -> int:
    """``bsnn train``: build the run from a recipe and overrides, then train (or resume) it."""
    from .config import resolve
    from .recipes import load_recipe
    from .train import build_trainer
    from .train import checkpoint as ckpt
    from .train.distributed import world_size

    with _deferred_warnings():
        cfg = resolve(load_recipe(args.recipe), args.set)
        if args.print_config:
            print(yaml.safe_dump(cfg, sort_keys=False).rstrip())
            return 0
        out = _run_folder(args, cfg)
        state = ckpt.load_run(out / "checkpoint.pt") if args.resume else None
        log = RunLog()
        trainer = build_trainer(cfg, out_dir=out, log=log)   # validates data before anything is written
        if cfg["train"]["sync_bn"] and world_size() == 1:
            warnings.warn("train.sync_bn=true has no effect in one process (it applies under torchrun)")
        if state is not None:
            trainer.resume(state)
    say = log if trainer.main else (lambda *a, **k: None)
    if trainer.main:
        from .measure.labels import LABELS_FILE, layer_labels

        log.attach(out / RunLog.FILE)
        for name, text in (("config.yaml", yaml.safe_dump(cfg, sort_keys=False)),
                           (LABELS_FILE, json.dumps(layer_labels(trainer.net), indent=1, ensure_ascii=False))):
            try:
                ckpt.atomic_write_text(text, out / name)
            except OSError as e:
                raise UserError(f"cannot write {out / name}: {e.strerror or e}") from None
    say(f"run {cfg['name']} -> {out}" + (f" ({world_size()} processes)" if world_size() > 1 else ""))
    _report_model(trainer.net, say)
    t0 = time.perf_counter()
    history = trainer.fit()
    train_s = sum(r["train_time_s"] for r in history[trainer.start_epoch:])
    last = history[-1]
    say(f"done: test accuracy {100 * last['test_acc']:.2f}% after {last['epoch']} epochs; "
        f"training time {train_s:.1f} s (wall {time.perf_counter() - t0:.1f} s incl. evaluation)")
    _report_model(trainer.net, say)
    if trainer.main and trainer.last_evaluation is not None and trainer.last_evaluation.bn_warning():
        print(f"bsnn: warning: {trainer.last_evaluation.bn_warning()}", file=sys.stderr)
    return 0


def _load_checkpoint(path_text: str) -> dict:
    """A bsnn run checkpoint, loaded safely (``weights_only=True``); any problem is one line."""
    from .train import checkpoint as ckpt

    return ckpt.load_run(Path(path_text))


def _checkpoint_net(args, with_data: bool = False) -> tuple:
    """``(state, cfg, info, model)`` of ``--checkpoint`` with ``--set`` overrides, its weights loaded
    (CPU). ``with_data``: threads and seed from the config, and ``info`` is the built dataset; otherwise
    the data facts the checkpoint saved."""
    import torch

    from .config import apply_overrides, validate
    from .train.build import build_data, build_model, checkpoint_info, seed_everything
    from .train.checkpoint import load_model_state

    with _deferred_warnings():
        state = _load_checkpoint(args.checkpoint)
        cfg = validate(apply_overrides(state["config"], args.set))
        if with_data:
            if cfg["train"]["threads"]:
                torch.set_num_threads(cfg["train"]["threads"])
            seed_everything(cfg["train"]["seed"])
        info = build_data(cfg) if with_data else checkpoint_info(state, cfg)
        model = build_model(cfg, info)
        load_model_state(model, state["model"], args.checkpoint)
    return state, cfg, info, model


def _checkpoint_model(args) -> tuple:
    """``(state, cfg, model, method, test loader, device)`` of a checkpoint's run: the data and the
    model only (no trainer, optimizer, teacher or ``train.init_from`` parent)."""
    from .data import make_loader
    from .train.build import build_method, resolve_device

    state, cfg, bundle, model = _checkpoint_net(args, with_data=True)
    device = resolve_device(cfg["train"]["device"])
    loader = make_loader(bundle.test, cfg["data"]["test_batch_size"], shuffle=False,
                         num_workers=cfg["data"]["num_workers"])
    return state, cfg, model.to(device), build_method(cfg, bundle, device), loader, device


def cmd_eval(args) -> int:
    """``bsnn eval``: a checkpoint's test accuracy, per-step accuracy and BatchNorm fit check (data and model only)."""
    from .train.evaluate import evaluate

    state, cfg, model, method, loader, device = _checkpoint_model(args)
    res = evaluate(model, loader, method, device=device)
    print(f"{cfg['name']} (epoch {state['epoch']}): test accuracy {100 * res.accuracy:.2f}%  "
          f"loss {res.loss:.4f}  ({res.samples:,} samples, T={method.T})")
    print("accuracy of each time step alone: " + "  ".join(f"t={t} {100 * a:.2f}%"
                                                           for t, a in enumerate(res.step_accuracy)))
    _report_model(model)
    warning = res.bn_warning()
    if warning:
        print(f"bsnn: warning: {warning}", file=sys.stderr)
    return 0


def _writable(path: Path, folder: bool = False) -> None:
    """Refuse an output file (or ``folder``) that cannot be written, before any work is done."""
    path = Path(os.path.abspath(path))
    existing = path
    while not _exists(existing):
        existing = existing.parent
    if existing == path and path.is_dir() != folder:
        raise UserError(f"cannot write {path}: it is {'a file' if folder else 'a folder'}")
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {path}: {existing} is not a writable folder")
    limit = os.pathconf(existing, "PC_NAME_MAX")
    if any(len(os.fsencode(part)) > limit for part in path.relative_to(existing).parts):
        raise UserError(f"cannot write {short(str(path), 120)}: a name in it is longer than {limit} bytes")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:              # e.g. a name too long to look up
        return False


def cmd_ensemble(args) -> int:
    """``bsnn ensemble``: a checkpoint as a self-ensemble of its T members; writes ``ensemble.json``."""
    from .measure.ensemble import ensemble
    from .train.checkpoint import atomic_write_text

    if args.batches is not None and args.batches < 1:
        raise UserError(f"--batches must be >= 1, got {args.batches}")
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("ensemble.json")
    _writable(out)
    state, cfg, model, method, loader, device = _checkpoint_model(args)
    report = ensemble(model, loader, method, device=device, max_batches=args.batches)
    print(f"{cfg['name']} (epoch {state.get('epoch')}), test set")
    print(report.table())
    try:
        atomic_write_text(json.dumps(report.to_dict(), indent=1) + "\n", out)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out}")
    return 0


def cmd_summary(args) -> int:
    """``bsnn summary``: per-layer bits, firing rates and synaptic operations (or a packed file's report)."""
    if args.file:                              # a packed file: read without torch
        return _summary_of_file(args.file)
    from . import models
    from .config import resolve
    from .measure.summary import summary
    from .recipes import load_recipe
    from .train import build_model

    x, temporal, note = None, False, "random inputs, uniform in [0, 1)"
    if args.recipe or args.checkpoint:
        from .data import dataset_info
        from .train import build_data

        if args.checkpoint:
            _, cfg, info, model = _checkpoint_net(args)
        else:
            cfg = resolve(load_recipe(args.recipe), args.set)
            info = dataset_info(cfg["data"]["name"])
            model = build_model(cfg, info)
        shape, temporal = info.input_shape, info.temporal
        T = args.time_steps or cfg["method"]["time_steps"]
        try:
            import torch
            test = build_data(cfg).test
            pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:args.batch_size]
            x = torch.stack([torch.as_tensor(test[i][0]) for i in pick.tolist()])
            note = f"{len(x)} random test samples of {cfg['data']['name']}"
        except UserError as e:
            note += f" ({cfg['data']['name']} not loaded: {e})"
    else:
        from .config import check_model_options, parse_value
        if not args.model or not args.input_shape:
            raise UserError("summary needs --recipe NAME, --checkpoint PATH, or --model NAME with --input-shape C H W")
        kwargs = {"name": args.model}
        for item in args.set:
            if "=" not in item:
                raise UserError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            kwargs[k.removeprefix("model.")] = parse_value(v)
        kwargs = check_model_options(kwargs, injected=("in_features", "in_channels", "image_size"))
        kwargs.pop("name")
        shape = tuple(args.input_shape)
        params = models.model_signature(args.model).parameters
        c, *spatial = shape
        for k, v in (("in_channels", c), ("image_size", spatial[-1] if spatial else None),
                     ("in_features", int(__import__("math").prod(shape)))):
            if k in params and k not in kwargs and v is not None:
                kwargs[k] = v
        T = args.time_steps or 1
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs.setdefault("time_steps", T)               # LayerKit's: per-step BatchNorm rows, AGMM's alpha
        try:
            model = models.create(args.model, **kwargs)
        except (TypeError, ValueError) as e:
            raise UserError(f"model {args.model}: {e}") from None
    print(summary(model, shape, T, x=x, batch_size=args.batch_size, temporal=temporal).table())
    print(f"firing rates and operations measured on {note}")
    return 0


def _summary_of_file(path: str) -> int:
    from .runtime import FormatError
    from .runtime.report import file_report

    try:
        report = file_report(path)
    except FormatError as e:
        raise UserError(str(e)) from None
    print(report.table())
    return 0


EXPORT_FORMATS = ("packed", "nir", "onnx")


def cmd_export(args) -> int:
    """``bsnn export``: a checkpoint's model as a packed 1-bit file, a NIR graph or an ONNX step."""
    from .export import UnsupportedModel

    out = Path(args.out)
    _writable(out)
    class_names = None
    if args.class_names is not None:
        class_names = [c.strip() for c in args.class_names.split(",")]
    state, cfg, info, model = _checkpoint_net(args)
    model.eval()
    if class_names is not None and len(class_names) != info.num_classes:
        raise UserError(f"--class-names gives {len(class_names)} names; the model has {info.num_classes} classes")
    T = cfg["method"]["time_steps"]
    source = {"recipe": cfg["name"], "model": cfg["model"]["name"], "method": cfg["method"]["name"],
              "dataset": cfg["data"]["name"], "epoch": state.get("epoch")}
    try:
        if args.format == "packed":
            from .export import save_packed
            res = save_packed(model, out, T, info.input_shape, class_names, args.real_dtype, info.temporal, source)
        elif args.format == "nir":
            from .export.nir import export_nir
            res = export_nir(model, out, info.input_shape, T, args.allow_reset_mismatch)
        else:
            from .export.onnx import export_onnx_step
            res = export_onnx_step(model, out, info.input_shape, T)
    except (UnsupportedModel, ImportError) as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    ckpt_bytes = Path(args.checkpoint).stat().st_size
    print(f"wrote {out} ({args.format}, T={T}): {res['bytes']:,} bytes; checkpoint {ckpt_bytes:,} bytes")
    if args.format == "packed":
        summary_bytes = res["summary_bits"] / 8
        print(f"file {res['bytes']:,} bytes vs summary {summary_bytes:,.0f} bytes (binary at 1 bit, real at 32 bit): "
              f"file/summary {res['bytes'] / summary_bytes:.4f}")
    return 0


def cmd_infer(args) -> int:
    """``bsnn infer``: predictions of a packed file on an ``.npy`` batch with the torch-free runtime."""
    import numpy as np

    from .runtime import FormatError, kernel, load

    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        model = load(args.model, args.path)
    except FormatError as e:
        raise UserError(str(e)) from None
    try:
        x = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UserError(f"cannot read {args.input} as a .npy array ({type(e).__name__}: {e})") from None
    if not isinstance(x, np.ndarray):
        raise UserError(f"{args.input} is not a .npy array (an .npz archive?)")
    try:
        x = model.check_input(x)
    except ValueError as e:
        raise UserError(f"{args.input}: {e}") from None
    if len(x) == 0:
        raise UserError(f"{args.input} holds no samples")
    t0 = time.perf_counter()
    try:
        logits = np.concatenate([model.run(x[i:i + args.batch_size]) for i in range(0, len(x), args.batch_size)])
    except ValueError as e:       # a file whose layers do not fit together (shapes), though each is well-formed
        raise UserError(f"{args.model} is not a runnable bsnn model ({e})") from None
    elapsed = time.perf_counter() - t0
    names = model.class_names or []
    for i, row in enumerate(logits):
        k = int(row.argmax())
        line = f"{i}\t{k}" + (f"\t{names[k]}" if k < len(names) else "")
        if args.logits:
            line += "\t" + " ".join(f"{v:.6g}" for v in row)
        print(line)
    how = f"{args.path} path" + (f", {kernel()} kernel" if args.path == "packed" else "")
    print(f"{len(x)} samples, T={model.time_steps}, {how}: {elapsed:.3f} s", file=sys.stderr)
    return 0


def cmd_plot(args) -> int:
    """``bsnn plot``: PNG plots of a run folder or a benchmark CSV."""
    from .measure.plots import plot

    for path in plot(args.target):
        print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    """``bsnn bench``: memory vs T, throughput or optimizer-step benchmarks."""
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


def cmd_models(args) -> int:
    """``bsnn models``: the registered models and their options."""
    from .models import list_models, model_signature

    for name in list_models():
        params = ", ".join(p for p in model_signature(name).parameters if p not in ("kit", "kwargs"))
        print(f"{name:28s} {params}")
    return 0


def cmd_datasets(args) -> int:
    """``bsnn datasets``: the registered datasets, their classes, sample shape and options."""
    from .data.registry import dataset_info, dataset_signature, list_datasets

    for name in list_datasets():
        info = dataset_info(name)
        shape = "x".join(map(str, info.input_shape)) + (" frames" if info.temporal else "")
        options = ", ".join(p for p in dataset_signature(name).parameters if p != "kwargs")
        classes = "files" if info.num_classes is None else info.num_classes     # counted from the data
        print(f"{name:20s} {classes:>5} classes  {shape:18s} {options}")
    return 0


def cmd_recipes(args) -> int:
    """``bsnn recipes``: the shipped recipes and their descriptions."""
    from .recipes import list_recipes, load_recipe

    for name in list_recipes():
        r = load_recipe(name)
        print(f"{name:32s} {r.get('description', '')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``bsnn`` argument parser with its subcommands."""
    p = argparse.ArgumentParser(prog="bsnn", description="Binary spiking neural networks.")
    p.add_argument("--version", action="version", version=f"bsnn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train from a recipe")
    t.add_argument("--recipe", required=True, help="recipe name (`bsnn recipes`) or a .yaml path")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.threshold=1e-6 (repeatable)")
    t.add_argument("--out", help="run folder (default: runs/<name>-<time>)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved config (recipe + defaults + --set) as YAML and exit")
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
    s.add_argument("--file", help="or: a packed .bsnn file (its layers, real size and the summary's size)")
    s.set_defaults(fn=cmd_summary)
    ex = sub.add_parser("export", help="write a checkpoint's model as a packed 1-bit file, NIR or an ONNX step")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--out", required=True, help="output file (e.g. model.bsnn, model.nir, model.onnx)")
    ex.add_argument("--format", choices=EXPORT_FORMATS, default="packed",
                    help="packed: 1-bit safetensors for bsnn.runtime (default); nir; onnx: one time step")
    ex.add_argument("--real-dtype", choices=["float32", "float16"], default="float32",
                    help="storage of real tensors in the packed file")
    ex.add_argument("--class-names", metavar="A,B,...", help="class names stored in the packed file")
    ex.add_argument("--allow-reset-mismatch", action="store_true",
                    help="nir: write soft-reset neurons as NIR's hard-reset LIF (their dynamics then differ)")
    ex.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ex.set_defaults(fn=cmd_export)
    inf = sub.add_parser("infer", help="predict with a packed .bsnn file (torch-free runtime)")
    inf.add_argument("model", help="a .bsnn file written by `bsnn export`")
    inf.add_argument("input", help=".npy array [N, *input_shape] (or [N, T, *input_shape] for temporal data), "
                                   "preprocessed as the model's training data")
    inf.add_argument("--path", choices=["packed", "reference"], default="packed",
                     help="packed: popcount on 1-bit weights; reference: unpacked float matmul")
    inf.add_argument("--batch-size", type=int, default=256)
    inf.add_argument("--logits", action="store_true", help="also print the logits summed over T")
    inf.set_defaults(fn=cmd_infer)
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
    sub.add_parser("models", help="list the registered models and their options").set_defaults(fn=cmd_models)
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(fn=cmd_datasets)
    return p


def _message(e: UserError) -> str:
    """The error's own message, also when a DataLoader worker re-raised it wrapped in a traceback."""
    text = str(e)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for bad input, with one ``bsnn: error:`` line)."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"bsnn: error: {one_line(_message(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bsnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                   # `bsnn models | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
