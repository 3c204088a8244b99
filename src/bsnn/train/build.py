"""Build a run (data, model, method, optimizer, schedules, trainer) from a validated config."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch

from .. import data as datasets
from .. import models
from ..errors import ConfigError, UserError, one_line
from ..optim import BSO, TBSO, FlipScheduler, track_skipped_steps
from . import distributed
from .bptt import BPTTMethod
from .distill import load_teacher
from .losses import StepLoss
from .online import OnlineMethod
from .trainer import Trainer

__all__ = ["build_data", "build_model", "build_method", "build_criterion", "build_teacher", "build_optimizer",
           "build_trainer", "checkpoint_info", "resolve_device", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """The device ``name`` (``"auto"``: CUDA if available, else CPU); ``UserError`` for ``"cuda"``
    without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available")
    return torch.device(name)


# What a constructor raises when it rejects an option's value (a user error, not a bug of bsnn).
REJECTED = (ValueError, TypeError, OverflowError, IndexError, KeyError, ZeroDivisionError)


def _rejected(what: str, e: Exception) -> ConfigError:
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return ConfigError(one_line(f"{what}: {text or type(e).__name__}", 300))


def build_data(cfg: dict) -> datasets.DataBundle:
    """The config's dataset, given the method's ``time_steps`` when it takes them (one frame per step);
    options it rejects become ``ConfigError``."""
    d = cfg["data"]
    kwargs = {k: v for k, v in d.items() if k not in ("name", "batch_size", "test_batch_size", "num_workers")}
    if "time_steps" in datasets.dataset_signature(d["name"]).parameters:
        kwargs["time_steps"] = cfg["method"]["time_steps"]      # one frame per time step
    try:
        return datasets.create(d["name"], **kwargs)
    except REJECTED as e:
        raise _rejected(f"data {d['name']}", e) from None


def checkpoint_info(state: dict, cfg: dict) -> datasets.DatasetInfo:
    """The data facts a checkpoint's model was built for (classes, input shape, temporal): saved in the
    checkpoint by the trainer; the registry's for older checkpoints."""
    saved = state.get("data_info")
    try:
        return datasets.DatasetInfo(int(saved["num_classes"]), tuple(int(s) for s in saved["input_shape"]),
                                    bool(saved["temporal"]))
    except (TypeError, KeyError, ValueError):
        return datasets.dataset_info(cfg["data"]["name"])


def build_model(cfg: dict, info: datasets.DatasetInfo | datasets.DataBundle | None = None) -> torch.nn.Module:
    """The recipe's model, with classes, input size and method filled in from the data and method (a
    dataset whose classes depend on its files is built to count them)."""
    info = info or datasets.dataset_info(cfg["data"]["name"])
    if info.num_classes is None:
        info = build_data(cfg)
    m = {k: v for k, v in cfg["model"].items() if k != "name"}
    params = models.model_signature(cfg["model"]["name"]).parameters
    c, *spatial = info.input_shape
    injected = {"method": cfg["method"]["name"], "num_classes": info.num_classes,
                "in_features": math.prod(info.input_shape), "in_channels": c,
                "image_size": spatial[-1] if spatial else None}
    takes_kit = any(p.kind is p.VAR_KEYWORD for p in params.values())
    injected["time_steps"] = cfg["method"]["time_steps"]
    m.update({k: v for k, v in injected.items() if (k in params or (takes_kit and k == "time_steps"))
              and v is not None})
    try:
        return models.create(cfg["model"]["name"], **m)
    except (*REJECTED, RuntimeError) as e:             # RuntimeError: torch refusing a size
        raise _rejected(f"model {cfg['model']['name']}", e) from None


def build_criterion(cfg: dict) -> StepLoss:
    """The per-step loss from ``method`` (``loss_lambda``, ``label_smoothing``) and ``distill``."""
    d = cfg["distill"]
    return StepLoss(cfg["method"]["loss_lambda"], cfg["method"]["label_smoothing"], d["name"], d["alpha"], d["tau"])


def build_teacher(cfg: dict, info: datasets.DatasetInfo | datasets.DataBundle, device: torch.device):
    """The distillation teacher on ``device``, or None unless ``distill.name`` is soft or hard with
    ``alpha > 0``."""
    d = cfg["distill"]
    if d["name"] not in ("soft", "hard") or d["alpha"] == 0:
        return None
    return load_teacher(d["teacher"], d["teacher_format"], d["teacher_arch"], info.num_classes, info.temporal,
                        device)


def build_method(cfg: dict, bundle: datasets.DatasetInfo | datasets.DataBundle, device: torch.device,
                 teacher=None):
    """The training method of ``method.name`` (online or BPTT) with its loss, teacher and AMP dtype
    (bfloat16 on CPU, float16 on GPU, with ``train.amp``)."""
    me = cfg["method"]
    amp = torch.bfloat16 if cfg["train"]["amp"] and device.type == "cpu" else (
        torch.float16 if cfg["train"]["amp"] else None)
    common = dict(temporal=bundle.temporal, criterion=build_criterion(cfg), teacher=teacher, amp_dtype=amp)
    if me["name"] == "online":
        return OnlineMethod(me["time_steps"], me["mode"], **common)
    return BPTTMethod(me["time_steps"], me["loss"], **common)


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer; its constructor's rejections (negative eps, ...) become ``ConfigError``."""
    try:
        return track_skipped_steps(_optimizer(cfg, model))
    except REJECTED as e:
        raise _rejected(f"optim {cfg['optim']['name']}", e) from None


def _optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg["optim"]
    if o["name"] in ("bso", "tbso"):
        real_cls = torch.optim.SGD if o["real"] == "sgd" else torch.optim.Adam
        real_kwargs = {"weight_decay": o["weight_decay"]}
        if o["real"] == "sgd":
            real_kwargs["momentum"] = o["momentum"]
        else:
            real_kwargs["betas"] = tuple(o["betas"])
        common = dict(lr=o["lr"], threshold=o["threshold"], beta1=o["beta1"],
                      momentum_reset=o["momentum_reset"], fused=o["fused"], real_optimizer=real_cls,
                      real_optimizer_kwargs=real_kwargs)
        if o["name"] == "bso":
            return BSO(model.parameters(), **common)
        return TBSO(model.parameters(), beta2=o["beta2"], eps=o["eps"],
                    time_steps=cfg["method"]["time_steps"], **common)
    if o["name"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o["lr"], momentum=o["momentum"],
                               weight_decay=o["weight_decay"])
    adam = torch.optim.AdamW if o["name"] == "adamw" else torch.optim.Adam
    return adam(model.parameters(), lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])


def apply_hyperparameters(cfg: dict, optimizer: torch.optim.Optimizer) -> None:
    """Set the config's hyperparameters on every group (after loading another run's optimizer state)."""
    o = cfg["optim"]
    for g in optimizer.param_groups:
        g["lr"] = o["lr"]
        g.pop("initial_lr", None)
        if g.get("binary"):
            g.update(threshold=o["threshold"], beta1=o["beta1"], momentum_reset=o["momentum_reset"])
            if "beta2" in g:
                g.update(beta2=o["beta2"], eps=o["eps"])


def init_from(cfg: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, log=print) -> None:
    """Start from another run's weights and optimizer state (e.g. ImageNet: T=1 pre-training, then
    fine-tuning at T=4/6). T-BSO's per-time-step v is resized to this run's T; hyperparameters,
    schedules and the epoch count come from this run's config."""
    from . import checkpoint as ckpt

    path = cfg["train"]["init_from"]
    try:
        state = ckpt.load_run(path)
        ckpt.load_model_state(model, state["model"], path)
    except ckpt.CheckpointError as e:
        raise UserError(f"train.init_from: {e}") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:
        log(f"init_from: optimizer state not loaded ({one_line(str(e), 200)}); starting it fresh")
    if isinstance(optimizer, TBSO):
        optimizer.resize_time_steps(cfg["method"]["time_steps"])
    apply_hyperparameters(cfg, optimizer)
    log(f"initialised from {path} (epoch {state['epoch']}, T={state['config'].get('method', {}).get('time_steps')})")


def build_lr_scheduler(cfg: dict, optimizer):
    """The epoch schedule, after ``schedule.warmup_epochs`` of linear warm-up from lr/warmup to lr."""
    s, epochs = cfg["schedule"], cfg["train"]["epochs"]
    lrs = torch.optim.lr_scheduler
    warm = s["warmup_epochs"]
    if s["lr"] == "cosine":
        main = lrs.CosineAnnealingLR(optimizer, T_max=max(1, (s["lr_epochs"] or epochs) - warm))
    elif s["lr"] == "step":
        main = lrs.StepLR(optimizer, s["lr_step"], s["lr_gamma"])
    else:
        main = None
    if not warm:
        return main
    warmup = lrs.LinearLR(optimizer, start_factor=1.0 / (warm + 1), total_iters=warm)
    if main is None:
        return warmup
    return lrs.SequentialLR(optimizer, [warmup, main], milestones=[warm])


def build_trainer(cfg: dict, out_dir: str | Path | None = None, log=print,
                  bundle: datasets.DataBundle | None = None) -> Trainer:
    """Build a whole run from a validated config: device (DDP when launched by torchrun), seed, data,
    model, optimizer (``train.init_from``), schedules, method and :class:`Trainer`."""
    tr = cfg["train"]
    device = resolve_device(tr["device"])
    ddp = distributed.init_from_env(device.type)
    if ddp is not None and device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
    if tr["threads"]:
        torch.set_num_threads(tr["threads"])
    seed_everything(tr["seed"])
    bundle = bundle or build_data(cfg)
    model = build_model(cfg, bundle).to(device)
    optimizer = build_optimizer(cfg, model)
    if tr["init_from"]:
        init_from(cfg, model, optimizer, log)
    flip = None
    if isinstance(optimizer, BSO) and cfg["schedule"]["flip"] != "constant":
        flip = FlipScheduler(optimizer, cfg["schedule"]["flip"], cfg["schedule"]["flip_every"],
                             cfg["schedule"]["flip_factor"])
    try:
        lr_scheduler = build_lr_scheduler(cfg, optimizer)
    except REJECTED as e:
        raise _rejected("schedule", e) from None
    if ddp is not None:
        model = distributed.wrap(model, device, tr["sync_bn"])
    scaler = torch.amp.GradScaler(device.type) if tr["amp"] and device.type == "cuda" else None
    return Trainer(
        model, build_method(cfg, bundle, device, build_teacher(cfg, bundle, device)), optimizer, bundle,
        epochs=tr["epochs"], batch_size=cfg["data"]["batch_size"],
        test_batch_size=cfg["data"]["test_batch_size"], lr_scheduler=lr_scheduler,
        flip_scheduler=flip, scaler=scaler, device=device, seed=tr["seed"], out_dir=out_dir, config=cfg,
        progress=tr["progress"], num_workers=cfg["data"]["num_workers"],
        save_checkpoints=tr["checkpoint"], limit_batches=tr["limit_batches"],
        max_nonfinite=tr["max_nonfinite"], log_every=tr["log_every"], log=log,
    )


