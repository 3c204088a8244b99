"""Teachers for per-time-step distillation, loaded from local files only (nothing is ever downloaded).

A teacher file is one of:

* ``"bsnn"``: a bsnn checkpoint (``RUN/checkpoint.pt``); the teacher is that run's model and method,
  its logits the mean output over its own T steps (e.g. a full-precision twin of the student);
* ``"state_dict"``: a plain torch state dict of a torchvision architecture named by ``arch``
  (``torchvision.models.get_model(arch, weights=None, num_classes=...)``);
* ``"torchscript"``: a ``torch.jit.save``'d module mapping a batch to logits.

Checkpoints and state dicts load with ``weights_only=True`` (``bsnn.train.checkpoint.load``: no
code runs from the file). ``"auto"`` tells them apart by content. The teacher runs alongside the student, once per batch under
``no_grad`` in eval mode (not cached: augmentation makes every batch new); ``seconds`` accumulates its
cost, which the trainer logs as ``teacher_time_s``. An ANN teacher sees static images as they are and
frame sequences ``[B, T, ...]`` as their mean frame.
"""
from __future__ import annotations

import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError

__all__ = ["Teacher", "load_teacher", "FORMATS"]

FORMATS = ("auto", "bsnn", "state_dict", "torchscript")


class Teacher:
    """Callable ``x -> logits`` (no grad, eval mode); ``seconds`` is the time spent in it."""

    def __init__(self, model: nn.Module, method=None, temporal: bool = False, description: str = ""):
        self.model, self.method, self.temporal, self.description = model.eval(), method, temporal, description
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.seconds = 0.0

    def to(self, device) -> "Teacher":
        """Move the teacher's model to ``device``; returns the teacher."""
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        self.model.eval()
        if self.method is not None:                       # a spiking bsnn teacher: mean over its T
            out = self.method.predict(self.model, x) / self.method.T
        else:
            out = self.model(x.mean(1) if self.temporal else x)
        self.seconds += time.perf_counter() - t0
        return out.float()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or n.endswith("/code/") or "/code/" in n for n in z.namelist())


def _bsnn_teacher(state: dict, path: Path, device) -> Teacher:
    from .build import build_method, build_model, checkpoint_info
    from . import checkpoint as ckpt
    from ..config import validate

    try:
        with warnings.catch_warnings():         # the teacher run's own "has no effect" notes
            warnings.simplefilter("ignore")
            cfg = validate(state["config"])
    except UserError as e:
        raise UserError(f"distill.teacher: {path} holds an invalid config ({e})") from None
    info = checkpoint_info(state, cfg)
    model = build_model(cfg, info)
    try:
        ckpt.load_model_state(model, state["model"], path)
    except ckpt.CheckpointError as e:
        raise UserError(f"distill.teacher: {e} (its own config's model)") from None
    method = build_method(cfg, info, torch.device(device))
    return Teacher(model.to(device), method, info.temporal, f"bsnn {cfg['model']['name']} ({path})")


def load_teacher(path: str | Path, fmt: str = "auto", arch: str | None = None, num_classes: int | None = None,
                 temporal: bool = False, device="cpu") -> Teacher:
    """Load a teacher; every problem with the file is a one-line ``UserError``."""
    from . import checkpoint as ckpt

    path = Path(path)
    if fmt not in FORMATS:
        raise UserError(f"distill.teacher_format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not path.is_file():
        raise UserError(f"distill.teacher: no file at {path} (expected a bsnn checkpoint, a state dict with "
                        "distill.teacher_arch, or a TorchScript file)")
    if fmt == "torchscript" or (fmt == "auto" and _is_torchscript(path)):
        try:
            model = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001  (any failure: not a usable TorchScript file)
            raise UserError(f"distill.teacher: {path} is not a TorchScript module ({type(e).__name__})") from None
        return Teacher(model, None, temporal, f"TorchScript ({path})")
    try:
        state = ckpt.load(path)                      # weights_only=True
    except ckpt.CheckpointError as e:
        raise UserError(f"distill.teacher: cannot read the file: {e}") from None
    if isinstance(state, dict) and "config" in state and "model" in state and fmt in ("auto", "bsnn"):
        return _bsnn_teacher(state, path, device)
    if fmt == "bsnn":
        raise UserError(f"distill.teacher: {path} is not a bsnn checkpoint (no 'config' and 'model')")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"distill.teacher: {path} is neither a bsnn checkpoint, a state dict nor TorchScript")
    if not arch:
        raise UserError(f"distill.teacher: {path} is a plain state dict; name its torchvision architecture "
                        "with distill.teacher_arch (e.g. resnet18)")
    import torchvision

    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        model.load_state_dict(state)
    except ValueError:
        raise UserError(f"distill.teacher_arch: unknown torchvision model {arch!r}") from None
    except RuntimeError as e:
        raise UserError(f"distill.teacher: {path} does not fit {arch} ({str(e).splitlines()[0]})") from None
    return Teacher(model.to(device), None, temporal, f"torchvision {arch} ({path})")
