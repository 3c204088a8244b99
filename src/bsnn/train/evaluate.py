"""Evaluation without a trainer: ``evaluate(model, loader, method)`` and ``predict(model, x, method)``.

``evaluate`` gives the SNN's accuracy (argmax of the logits summed over T), its loss, and the accuracy
of every time step alone (each step is a member of the self-ensemble: ``bsnn.measure.ensemble``). It
also checks that BatchNorm's running statistics fit the data: on the first ``bn_check`` batches the
model runs once more with BatchNorm normalising by the batch's own statistics (nothing is updated); a
batch-statistics accuracy several points above the eval-mode one means the running statistics do not
describe what the layers see (typically one set of statistics shared by time steps whose inputs differ:
``model.bn_stats=per_step``).
"""
from __future__ import annotations

import itertools
import math
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Callable, ContextManager, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .method import Method, frozen_batchnorm_stats

__all__ = ["Evaluation", "evaluate", "predict", "batch_statistics", "BN_GAP_WARNING"]

BN_GAP_WARNING = 0.03          # warn when batch-statistics accuracy beats eval mode by more than this


@dataclass
class Evaluation:
    """What ``evaluate`` measured: accuracy, loss, per-step accuracy and the BatchNorm fit check."""
    accuracy: float
    loss: float
    step_accuracy: list[float]          # accuracy of each time step's logits alone
    samples: int
    bn_eval_accuracy: float | None      # on the checked batches: eval-mode BN ...
    bn_batch_accuracy: float | None     # ... and BN with the batch's statistics
    bn_samples: int

    @property
    def bn_gap(self) -> float | None:
        """Batch-statistics minus eval-mode accuracy on the checked batches (None: not checked)."""
        if self.bn_eval_accuracy is None or self.bn_batch_accuracy is None:
            return None
        return self.bn_batch_accuracy - self.bn_eval_accuracy

    def bn_warning(self, threshold: float = BN_GAP_WARNING) -> str | None:
        """A one-line warning when the running BatchNorm statistics do not fit the data (a gap above
        ``threshold`` and above sampling noise), else None."""
        gap = self.bn_gap
        if gap is None:
            return None
        a, b, n = self.bn_eval_accuracy, self.bn_batch_accuracy, max(self.bn_samples, 1)
        noise = 3 * math.sqrt((a * (1 - a) + b * (1 - b)) / n)       # 3 sigma of two binomial estimates
        if gap <= max(threshold, noise):
            return None
        return (f"BN statistics do not fit the data: on {self.bn_samples} test samples, BatchNorm with batch "
                f"statistics reaches {100 * self.bn_batch_accuracy:.1f}% and with its running statistics "
                f"{100 * self.bn_eval_accuracy:.1f}% (model.bn_stats=per_step keeps statistics per time step)")

    def to_dict(self) -> dict:
        """The fields as a plain dict, ``bn_gap`` included."""
        return {**asdict(self), "bn_gap": self.bn_gap}


@contextmanager
def batch_statistics(model: nn.Module):
    """Eval mode except that every BatchNorm normalises with the batch's statistics; running statistics
    are left as they were."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was = [m.training for m in bns]
    with frozen_batchnorm_stats(model):
        try:
            for m in bns:
                m.train()
            yield
        finally:
            for m, w in zip(bns, was):
                m.train(w)


def _device_of(model: nn.Module) -> torch.device:
    p = next(itertools.chain(model.parameters(), model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, method: Method) -> torch.Tensor:
    """The SNN's output for a batch: logits averaged over the method's T steps (eval mode; the model's
    training flag is restored). ``.argmax(-1)`` gives the classes."""
    was = model.training
    model.eval()
    try:
        return method.predict(model, x.to(_device_of(model))) / method.T
    finally:
        model.train(was)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, method: Method, *, device: torch.device | str | None = None,
             max_batches: int | None = None, bn_check: int = 4,
             reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             record: Callable[[], ContextManager] = nullcontext) -> Evaluation:
    """Accuracy, loss and per-step accuracy of ``model`` on ``loader``'s ``(x, y)`` batches, with
    ``method``'s T and input layout, in eval mode (the training flag is restored). ``bn_check``: how many
    first batches also run with batch-statistics BatchNorm (0: none). ``reduce``: sums a tensor of
    totals across processes (DDP). ``record``: a context entered around the eval-mode forwards only (a
    ``FiringRateMeter.record``), not around the BatchNorm check."""
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    device = torch.device(device) if device is not None else _device_of(model)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # SyncBatchNorm in batch-statistics mode would run collectives on however many batches each rank has
    has_bn = bool(bns) and not any(isinstance(m, nn.SyncBatchNorm) for m in bns)
    T = method.T
    # loss, correct, samples, bn: eval-correct, batch-correct, samples; correct per step
    totals = torch.zeros(6 + T, dtype=torch.float64, device=device)
    was = model.training
    model.eval()
    try:
        for i, (x, y) in enumerate(itertools.islice(loader, max_batches)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with record():
                steps = method.step_logits(model, x)                      # [T, B, classes]
            out = steps.sum(0)
            totals[0] += F.cross_entropy(out / T, y, reduction="sum")
            totals[1] += (out.argmax(1) == y).sum()
            totals[2] += len(y)
            totals[6:] += (steps.argmax(-1) == y).sum(1)
            if has_bn and i < bn_check and len(y) > 1:         # batch statistics need two samples
                with batch_statistics(model):
                    batch_out = method.predict(model, x)
                totals[3] += (out.argmax(1) == y).sum()
                totals[4] += (batch_out.argmax(1) == y).sum()
                totals[5] += len(y)
    finally:
        model.train(was)
    if reduce is not None:
        totals = reduce(totals)
    t = totals.tolist()
    n, checked = max(t[2], 1.0), t[5]
    return Evaluation(t[1] / n, t[0] / n, [c / n for c in t[6:]], int(t[2]),
                      t[3] / checked if checked else None, t[4] / checked if checked else None, int(checked))
