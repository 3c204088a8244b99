"""Schedules for BSO/T-BSO's flip threshold and momentum rate, stepped once per epoch.

* ``"step"``: the reference code's ``CustomScheduler``: after epoch index e (0-based) with
  ``e % every == 0 and e > 0``, threshold and (1 - beta1) are multiplied by ``factor``.
* ``"inv_sqrt"``: the paper's theorem (gamma_k, (1-beta1)_k ∝ 1/sqrt(k)), with k = epoch index + 1.
* ``"constant"``: no change.

beta2 is left alone, as in the reference code (its beta2 scheduler is never stepped).
"""
from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer

__all__ = ["FlipScheduler", "KINDS"]

KINDS = ("constant", "step", "inv_sqrt")


class FlipScheduler:
    """Sets the threshold and ``1 - beta1`` of the optimizer's binary groups, at every ``step`` (once per
    epoch), to their initial values times :meth:`scale` (``kind``: see the module docstring)."""

    def __init__(self, optimizer: Optimizer, kind: str = "step", every: int = 50, factor: float = 0.1):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.optimizer = optimizer
        self.kind, self.every, self.factor = kind, every, factor
        self.epoch = 0  # number of completed epochs
        self.base = [(g["threshold"], 1.0 - g["beta1"]) for g in self._groups()]

    def _groups(self):
        return [g for g in self.optimizer.param_groups if g.get("binary")]

    def scale(self, epoch: int | None = None) -> float:
        """Multiplier for the epoch with 0-based index ``epoch`` (default: the next one)."""
        e = self.epoch if epoch is None else epoch
        if self.kind == "step":
            return self.factor ** max(0, (e - 1) // self.every) if e > 0 else 1.0
        if self.kind == "inv_sqrt":
            return 1.0 / math.sqrt(e + 1)
        return 1.0

    def step(self) -> None:
        self.epoch += 1
        s = self.scale()
        for g, (thr, rate) in zip(self._groups(), self.base):
            g["threshold"] = thr * s
            g["beta1"] = 1.0 - rate * s

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "every": self.every, "factor": self.factor,
                "epoch": self.epoch, "base": self.base}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kind, self.every, self.factor = state["kind"], state["every"], state["factor"]
        self.epoch, self.base = state["epoch"], [tuple(b) for b in state["base"]]
