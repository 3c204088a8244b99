"""Per-time-step losses: cross-entropy (optional MSE-to-one-hot term, label smoothing) and distillation.

``StepLoss`` is the loss of one member (time step) ``o[t]``, used by every method::

    L_t = (1 − α) · [(1 − λ)·CE(o[t], y) + λ·MSE(o[t], onehot(y))] + α · D(o[t], teacher)

``D`` (DeiT-style, Touvron et al. ICML 2021): ``"soft"`` is ``τ² · KL(softmax(z/τ) ‖ softmax(o/τ))``,
``"hard"`` is ``CE(o, argmax z)``, ``"self"`` is ``"soft"`` with the detached mean over t of the
student's own outputs as ``z`` (the self-ensemble teaching its members, SEI-BWSNN reconstruction);
``"none"`` (or ``α = 0``) is the plain label loss. A model with a distillation head returns
``(out, out_kd)`` in training: the label loss uses ``out`` and ``D`` uses ``out_kd``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["spike_loss", "distillation", "StepLoss", "DISTILL", "logits"]

DISTILL = ("none", "soft", "hard", "self")


def spike_loss(out: torch.Tensor, y: torch.Tensor, loss_lambda: float = 0.0,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """``(1 - lambda) * CE(out, y) + lambda * MSE(out, onehot(y))`` on one time step's outputs."""
    ce = F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if loss_lambda == 0.0:
        return ce
    onehot = F.one_hot(y, out.shape[-1]).to(out.dtype)
    return (1.0 - loss_lambda) * ce + loss_lambda * F.mse_loss(out, onehot)


def distillation(out: torch.Tensor, teacher: torch.Tensor, kind: str, tau: float = 1.0) -> torch.Tensor:
    """``D(out, teacher)``: soft (τ²·KL at temperature τ) or hard (CE against the teacher's argmax)."""
    teacher = teacher.detach()
    if kind == "hard":
        return F.cross_entropy(out, teacher.argmax(-1))
    return F.kl_div(F.log_softmax(out / tau, -1), F.log_softmax(teacher / tau, -1),
                    reduction="batchmean", log_target=True) * tau * tau


def logits(out) -> torch.Tensor:
    """One tensor of logits: a ``(out, out_kd)`` pair is averaged (the prediction of a two-head model)."""
    return (out[0] + out[1]) / 2 if isinstance(out, (tuple, list)) else out


class StepLoss:
    """The loss ``L_t`` of one time step's output (see the module docstring): cross-entropy with optional
    MSE term and label smoothing, mixed with distillation by ``alpha``."""

    def __init__(self, loss_lambda: float = 0.0, label_smoothing: float = 0.0, distill: str = "none",
                 alpha: float = 0.5, tau: float = 1.0):
        if distill not in DISTILL:
            raise ValueError(f"distill must be one of {DISTILL}, got {distill!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.loss_lambda, self.label_smoothing = loss_lambda, label_smoothing
        self.distill, self.alpha, self.tau = distill, alpha, tau

    @property
    def needs_teacher(self) -> bool:
        """Whether the loss needs a teacher's logits (soft or hard distillation with ``alpha > 0``)."""
        return self.distill in ("soft", "hard") and self.alpha > 0

    @property
    def needs_ensemble(self) -> bool:
        """Whether the loss needs the student's own mean output over T (``"self"`` with ``alpha > 0``)."""
        return self.distill == "self" and self.alpha > 0

    def __call__(self, out, y: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of one step. ``teacher``: the teacher's logits (soft/hard) or the ensemble mean (self)."""
        out, out_kd = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, out)
        label = spike_loss(out.float(), y, self.loss_lambda, self.label_smoothing)
        if self.distill == "none" or self.alpha == 0:
            return label
        if teacher is None:
            raise ValueError(f"distill={self.distill!r} needs the teacher's logits")
        kind = "soft" if self.distill == "self" else self.distill
        return (1 - self.alpha) * label + self.alpha * distillation(out_kd.float(), teacher.float(), kind, self.tau)
