"""Run configuration: YAML recipe + ``--set key=value`` overrides, validated before anything runs.

A config is a plain nested dict (what is saved in checkpoints). ``DEFAULTS`` lists every key of the
fixed sections with its default, whose type is the expected type; a ``None`` default takes the type
in ``OPTIONAL`` (or anything, for free-form keys). Numbers must be finite, booleans are not numbers,
and ``_check_ranges`` bounds the keys that nothing else checks (options of models, datasets and optimizers
are checked by their constructors; ``bsnn.train.build`` turns what those reject into
``ConfigError``). ``model`` and ``data`` take ``name`` plus the keyword arguments of the registered
factory, checked against its signature. Any unknown key or bad value raises ``ConfigError`` (exit 2
in the CLI) with a one-line message.
"""
from __future__ import annotations

import copy
import inspect
import math
import warnings
from typing import Any

import yaml

from .errors import ConfigError, did_you_mean, short

__all__ = ["DEFAULTS", "OPTIONAL", "resolve", "apply_overrides", "validate", "parse_value", "yaml_load",
           "OPTIMIZER_KEYS"]

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "description": "",
    "target": None,  # free-form: what the recipe aims to reproduce
    "data": {"name": "digits", "root": None, "batch_size": 64, "test_batch_size": 256, "num_workers": 0},
    "model": {"name": "mlp"},
    "method": {"name": "online", "time_steps": 4, "mode": "realtime", "loss_lambda": 0.0, "loss": "per_step",
               "label_smoothing": 0.0},
    "distill": {"name": "none", "alpha": 0.5, "tau": 1.0, "teacher": None, "teacher_format": "auto",
                "teacher_arch": None},
    "optim": {"name": "tbso", "lr": 0.1, "threshold": 5e-7, "beta1": 0.999, "beta2": 0.99999,
              "eps": 1e-20, "momentum_reset": False, "real": "sgd", "momentum": 0.0,
              "weight_decay": 0.0, "betas": [0.9, 0.999], "fused": None},
    "schedule": {"lr": "cosine", "lr_epochs": None, "lr_step": 30, "lr_gamma": 0.1,
                 "warmup_epochs": 0, "flip": "constant", "flip_every": 50, "flip_factor": 0.1},
    "train": {"epochs": 10, "seed": 0, "device": "auto", "amp": False, "progress": True,
              "out_dir": None, "threads": None, "checkpoint": True, "limit_batches": None,
              "init_from": None, "sync_bn": False, "max_nonfinite": 0, "log_every": 0},
}

# Types of keys whose default is None (the value may then be None or of this type).
OPTIONAL = {("data", "root"): str, ("distill", "teacher"): str, ("distill", "teacher_arch"): str,
            ("schedule", "lr_epochs"): int, ("train", "out_dir"): str, ("train", "threads"): int,
            ("train", "limit_batches"): int, ("train", "init_from"): str,
            ("optim", "fused"): bool}      # null: compiled for large models (bsnn.optim.BSO)


CHOICES = {
    ("method", "name"): ("online", "bptt"),
    ("method", "mode"): ("realtime", "accumulated"),
    ("method", "loss"): ("per_step", "mean_output"),
    ("optim", "name"): ("bso", "tbso", "sgd", "adam", "adamw"),
    ("distill", "name"): ("none", "soft", "hard", "self"),
    ("distill", "teacher_format"): ("auto", "bsnn", "state_dict", "torchscript"),
    ("optim", "real"): ("sgd", "adam"),
    ("schedule", "lr"): ("cosine", "constant", "step"),
    ("schedule", "flip"): ("constant", "step", "inv_sqrt"),
    ("train", "device"): ("auto", "cpu", "cuda"),
}

# Keys of the optim section that each optimizer uses (the rest must keep their defaults).
OPTIMIZER_KEYS = {
    "bso": {"lr", "threshold", "beta1", "momentum_reset", "real", "momentum", "weight_decay", "betas",
            "fused"},
    "tbso": {"lr", "threshold", "beta1", "beta2", "eps", "momentum_reset", "real", "momentum",
             "weight_decay", "betas", "fused"},
    "sgd": {"lr", "momentum", "weight_decay"},
    "adam": {"lr", "betas", "weight_decay"},
    "adamw": {"lr", "betas", "weight_decay"},
}


class _Loader(yaml.SafeLoader):
    """YAML without implicit timestamps (``2024-01-01`` stays a string: a name or a path) and without
    aliases (``*a`` can build self-referencing values)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed",
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)


_Loader.yaml_implicit_resolvers = {
    c: [(tag, rx) for tag, rx in rs if tag != "tag:yaml.org,2002:timestamp"]
    for c, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def yaml_load(text: str) -> Any:
    """Parse YAML into plain values (what recipes and ``--set`` values are read with)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (a SafeLoader)


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (``1e-6`` becomes a float, ``[1,2]`` a list)."""
    try:
        v = yaml_load(text)
    except RecursionError:
        raise ConfigError(f"value {short(text)} is nested too deeply") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse value {short(text)}: {getattr(e, 'problem', None) or 'bad YAML'}") from None
    return _maybe_number(v)


PLAIN = (type(None), bool, int, float, str)
MAX_DEPTH = 8


def _name(key: Any) -> str:
    """A key as it reads in a message (cut short)."""
    return short(key)[1:-1] if isinstance(key, str) and len(key) < 60 else short(key)


def _check_plain(where: str, value: Any, depth: int = 0) -> None:
    """Only YAML's plain types (no dates, bytes or sets), nested at most ``MAX_DEPTH`` deep: configs
    are saved in checkpoints, which load with ``weights_only=True``."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"{_name(where)}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, PLAIN):
                raise ConfigError(f"{_name(where)}: key {short(k)} is not a plain name")
            _check_plain(f"{where}.{k}" if where else str(k), v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(f"{where}[{i}]", v, depth + 1)
    elif not isinstance(value, PLAIN):
        raise ConfigError(f"{_name(where)}: {type(value).__name__} values are not allowed, got {short(value)}")


def _maybe_number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v) if any(c in v.lower() for c in ".e") or v.lower() in ("inf", "nan") else int(v)
        except ValueError:
            return v
    return v


def deep_merge(base: dict, over: dict, path: str = "") -> dict:
    """A deep copy of ``base`` with ``over`` merged in: nested dicts merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v, f"{path}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _expects_str(parts: list[str]) -> bool:
    """Keys whose values are strings, so that ``data.root=2024`` stays the path "2024"."""
    if len(parts) != 2:
        return len(parts) == 1 and isinstance(DEFAULTS.get(parts[0]), str)
    default = DEFAULTS.get(parts[0], {}).get(parts[1]) if isinstance(DEFAULTS.get(parts[0]), dict) else None
    return isinstance(default, str) or OPTIONAL.get(tuple(parts)) is str


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """``key=value`` items; a whole section (``data={name: mnist}``) replaces the section on top of
    its defaults."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {short(item)}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set: bad key {short(key)}")
        node = cfg
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"--set: unknown section {short('.'.join(parts[:-1]))} in {short(key)}"
                                  f"{did_you_mean(p, [k for k, v in node.items() if isinstance(v, dict)])}")
            node = node[p]
        value = parse_value(text)
        if _expects_str(parts) and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = text.strip()
        if len(parts) == 1 and isinstance(DEFAULTS.get(parts[0]), dict) and isinstance(value, dict):
            value = deep_merge(DEFAULTS[parts[0]], value)
        node[parts[-1]] = value
    return cfg


def _check_type(where: str, value: Any, default: Any) -> Any:
    """Return ``value`` coerced to the type of ``default`` or raise ConfigError."""
    if default is None:
        return value
    if value is None:
        raise ConfigError(f"{where}: must not be empty")
    value = _maybe_number(value) if isinstance(default, (int, float)) and not isinstance(default, bool) else value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not -2**62 < value < 2**62:
            raise ConfigError(f"{where}: {short(value)} is out of range")
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:
            raise ConfigError(f"{where}: {short(value)} is too large for a float") from None
        if ok and not math.isfinite(value):
            raise ConfigError(f"{where}: must be a finite number, got {value}")
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok and default:
            value = [_check_type(f"{where}[{i}]", v, default[0]) for i, v in enumerate(value)]
        value = list(value) if ok else value
    elif isinstance(default, str):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)                    # a YAML number where a name or path is meant
        ok = isinstance(value, str)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {short(value)}")
    return value


def _check_optional(where: str, value: Any, kind: type) -> Any:
    """A key whose default is None: None, or a value of type ``kind``."""
    if value is None:
        return None
    return _check_type(where, value, kind())


def _check_factory(section: str, cfg: dict, sig: inspect.Signature, reserved: set[str], injected: set[str],
                   extra: dict | None = None):
    """Keys must be parameters of the factory, or (factories with ``**kwargs``) keys of ``extra``."""
    defaults = {k: p.default for k, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        defaults.update(extra or {})
    for k, v in list(cfg.items()):
        if k in reserved or k == "name":
            continue
        if k in injected:
            raise ConfigError(f"{section}.{k} is set by bsnn from the data and method; remove it")
        if k not in defaults:
            allowed = sorted(set(defaults) - injected)
            raise ConfigError(f"{section}.{_name(k)}: unknown option for {section} {cfg['name']!r}"
                              f"{did_you_mean(k, allowed)}; allowed: {', '.join(allowed) or 'none'}")
        default = defaults[k]
        if default is not inspect.Parameter.empty:
            cfg[k] = _check_type(f"{section}.{k}", v, default if not isinstance(default, tuple) else list(default))


MODEL_INJECTED = ("method", "num_classes", "in_features", "in_channels", "image_size", "time_steps")


def check_model_options(model: dict, injected=MODEL_INJECTED) -> dict:
    """Check (and coerce, in place) a ``model`` section: ``name`` and the factory's options, including
    ``LayerKit``'s for factories taking ``**kit``; ``injected`` keys are bsnn's to set."""
    from . import models
    from .models.layers import kit_fields

    try:
        sig = models.model_signature(model["name"])
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    _check_factory("model", model, sig, set(), set(injected), extra=kit_fields())
    return model


def validate(cfg: dict) -> dict:
    """Check every key and value; return the config with values coerced to their types."""
    from . import data, models

    if not isinstance(cfg, dict):
        raise ConfigError("a config must be a mapping")
    _check_plain("", cfg)
    cfg = copy.deepcopy(cfg)
    for k in cfg:
        if k not in DEFAULTS:
            raise ConfigError(f"unknown top-level key {_name(k)!r}{did_you_mean(k, DEFAULTS)}; "
                              f"allowed: {', '.join(DEFAULTS)}")
    for section, defaults in DEFAULTS.items():
        if not isinstance(defaults, dict):
            if section in cfg:
                cfg[section] = _check_type(section, cfg[section], defaults)
            continue
        if not isinstance(cfg.get(section), dict):
            raise ConfigError(f"section {section!r} must be a mapping")
        sec = cfg[section]
        for k, v in sec.items():
            if (section, k) in OPTIONAL:
                sec[k] = _check_optional(f"{section}.{k}", v, OPTIONAL[(section, k)])
            elif k in defaults:
                sec[k] = _check_type(f"{section}.{k}", v, defaults[k])
            elif section not in ("model", "data"):
                raise ConfigError(f"{section}.{_name(k)}: unknown key{did_you_mean(k, defaults)}; "
                                  f"allowed: {', '.join(defaults)}")
            if (section, k) in CHOICES and sec[k] not in CHOICES[(section, k)]:
                raise ConfigError(f"{section}.{k}: {short(sec[k])} is not one of "
                                  f"{', '.join(CHOICES[(section, k)])}")
        for k in set(defaults) - set(sec):             # a section given without some keys
            sec[k] = copy.deepcopy(defaults[k])
    try:
        models.model_signature(cfg["model"]["name"])
        dsig = data.dataset_signature(cfg["data"]["name"])
    except KeyError as e:
        raise ConfigError(str(e.args[0])) from None
    except TypeError:                                   # an unhashable name
        raise ConfigError(f"model.name and data.name must be names, got {short(cfg['model']['name'])} "
                          f"and {short(cfg['data']['name'])}") from None
    check_model_options(cfg["model"])
    if cfg["model"].get("agmm") is not None and not isinstance(cfg["model"]["agmm"], dict):
        raise ConfigError("model.agmm must be a mapping of AGMM options (or null)")
    _check_factory("data", cfg["data"], dsig, set(DEFAULTS["data"]), {"time_steps"})
    _check_ranges(cfg)
    opt = cfg["optim"]
    for k in sorted(set(DEFAULTS["optim"]) - OPTIMIZER_KEYS[opt["name"]] - {"name"}):
        if opt[k] != DEFAULTS["optim"][k]:
            warnings.warn(f"optim.{k}={short(opt[k])} has no effect with optim.name={opt['name']}", stacklevel=2)
    return cfg


def _none_or_positive(value: int | None) -> bool:
    return value is None or value >= 1


def _check_ranges(cfg: dict) -> None:
    checks = [
        ("data.batch_size", cfg["data"]["batch_size"] >= 1, ">= 1"),
        ("data.test_batch_size", cfg["data"]["test_batch_size"] >= 1, ">= 1"),
        ("data.num_workers", cfg["data"]["num_workers"] >= 0, ">= 0"),
        ("method.time_steps", cfg["method"]["time_steps"] >= 1, ">= 1"),
        ("method.loss_lambda", 0.0 <= cfg["method"]["loss_lambda"] <= 1.0, "in [0, 1]"),
        ("method.label_smoothing", 0.0 <= cfg["method"]["label_smoothing"] < 1.0, "in [0, 1)"),
        ("distill.alpha", 0.0 <= cfg["distill"]["alpha"] <= 1.0, "in [0, 1]"),
        ("distill.tau", 0.0 < cfg["distill"]["tau"] < float("inf"), "> 0 and finite"),
        ("schedule.warmup_epochs", cfg["schedule"]["warmup_epochs"] >= 0, ">= 0"),
        ("optim.lr", cfg["optim"]["lr"] >= 0, ">= 0"),
        ("optim.threshold", cfg["optim"]["threshold"] >= 0, ">= 0"),
        ("optim.beta1", 0.0 <= cfg["optim"]["beta1"] < 1.0, "in [0, 1)"),
        ("optim.beta2", 0.0 <= cfg["optim"]["beta2"] < 1.0, "in [0, 1)"),
        ("train.epochs", cfg["train"]["epochs"] >= 1, ">= 1"),
        ("schedule.flip_every", cfg["schedule"]["flip_every"] >= 1, ">= 1"),
        ("schedule.lr_step", cfg["schedule"]["lr_step"] >= 1, ">= 1"),
        ("schedule.lr_epochs", _none_or_positive(cfg["schedule"]["lr_epochs"]), ">= 1 (or null: train.epochs)"),
        ("schedule.lr_gamma", cfg["schedule"]["lr_gamma"] > 0, "> 0"),
        ("schedule.flip_factor", cfg["schedule"]["flip_factor"] > 0, "> 0"),
        ("optim.betas", len(cfg["optim"]["betas"]) == 2, "two numbers [beta1, beta2]"),
        ("train.seed", 0 <= cfg["train"]["seed"] < 2**32, "in [0, 2**32)"),
        ("train.threads", _none_or_positive(cfg["train"]["threads"]), ">= 1 (or null: torch's default)"),
        ("train.limit_batches", _none_or_positive(cfg["train"]["limit_batches"]), ">= 1 (or null: all batches)"),
        ("train.max_nonfinite", cfg["train"]["max_nonfinite"] >= 0, ">= 0"),
        ("train.log_every", cfg["train"]["log_every"] >= 0, ">= 0 (0: a line every 30 s)"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(f"{key} must be {what}")
    d = cfg["distill"]
    if d["name"] in ("soft", "hard") and d["alpha"] > 0 and not d["teacher"]:
        raise ConfigError(f"distill.name={d['name']} needs a local teacher file: --set distill.teacher=PATH "
                          "(a bsnn checkpoint, a TorchScript file, or a state dict with distill.teacher_arch)")
    if cfg["method"]["name"] == "online" and cfg["method"]["loss"] == "mean_output":
        raise ConfigError("method.loss=mean_output needs all T outputs at once: use method.name=bptt")
    if cfg["method"]["name"] == "bptt" and cfg["optim"]["name"] in ("bso", "tbso"):
        raise ConfigError("method.name=bptt trains latent weights with optim.name=sgd or adam; "
                          "BSO/T-BSO need method.name=online")
    bn_stats = cfg["model"].get("bn_stats", "auto")
    if cfg["train"]["sync_bn"] and (bn_stats == "per_step" or (bn_stats == "auto" and cfg["method"]["name"] == "online")):
        raise ConfigError("train.sync_bn=true keeps one set of BatchNorm statistics: set model.bn_stats=shared "
                          "(online training defaults to per-step statistics)")
    if cfg["method"]["name"] == "online" and cfg["optim"]["name"] in ("sgd", "adam") \
            and cfg["model"].get("binary", True):
        raise ConfigError("online binary weights (exactly ±1) are trained by optim.name=bso or tbso; "
                          "set model.binary=false for a full-precision online (OTTT) run")


def resolve(recipe: dict, overrides: list[str] | None = None) -> dict:
    """DEFAULTS <- recipe <- overrides, validated."""
    if not isinstance(recipe, dict):
        raise ConfigError("a recipe must be a mapping")
    cfg = deep_merge(DEFAULTS, recipe)
    cfg = apply_overrides(cfg, overrides or [])
    return validate(cfg)
