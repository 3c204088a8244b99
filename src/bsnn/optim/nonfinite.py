"""Non-finite gradients: skip the step and count it (GradScaler's policy for ``inf``, without scaling).

One NaN or inf in a gradient would poison BSO's momentum and T-BSO's ``v[t]`` for good (a NaN
threshold flips nothing, ever), or the weights of a real-valued optimizer. :func:`skip_step` checks
every gradient of an optimizer (min and max per tensor, one host sync per step, as GradScaler does)
and, if any value is not finite, leaves weights *and* optimizer state untouched and counts the step
in ``optimizer.skipped_steps``; :func:`track_skipped_steps` puts that count into the optimizer's
``state_dict`` (key ``"skipped_steps"``) so that it survives checkpoints. Under a ``GradScaler`` the
scaler finds the non-finite gradients first and skips the step itself; the check here then sees only
finite gradients. Policy: ``docs/methods.md``, "Non-finite values".
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer

__all__ = ["all_finite", "grads_finite", "skip_step", "track_skipped_steps"]

KEY = "skipped_steps"


def all_finite(tensors, summaries=()) -> bool:
    """True when every value of ``tensors`` and every 0-d tensor in ``summaries`` (e.g. sums of squares,
    which are not finite when their tensor is not) is finite. Min and max keep NaN and inf and cannot
    overflow: one read of each tensor (a max-norm through ``_foreach_norm`` costs 10x more on the CPU),
    one host sync per device."""
    per_device: dict[torch.device, list[torch.Tensor]] = {}
    for g in tensors:
        g = g.coalesce().values() if g.is_sparse else g
        if g.numel():
            per_device.setdefault(g.device, []).extend(e.float() for e in torch.aminmax(g))
    for v in summaries:
        per_device.setdefault(v.device, []).append(v.float().reshape(()))
    return all(bool(torch.isfinite(torch.stack(v)).all()) for v in per_device.values())


def grads_finite(optimizer: Optimizer) -> bool:
    """True when every gradient of the optimizer's parameters is finite (or there is none)."""
    return all_finite([p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None])


def _save_count(optimizer: Optimizer, state_dict: dict) -> dict:
    return {**state_dict, KEY: optimizer.skipped_steps}


def _load_count(optimizer: Optimizer, state_dict: dict) -> dict:
    optimizer.skipped_steps = int(state_dict.get(KEY, 0))
    return {k: v for k, v in state_dict.items() if k != KEY}


def track_skipped_steps(optimizer: Optimizer) -> Optimizer:
    """Give ``optimizer`` a ``skipped_steps`` count that its ``state_dict`` saves and loads."""
    if not hasattr(optimizer, KEY):
        optimizer.skipped_steps = 0
        optimizer.register_state_dict_post_hook(_save_count)
        optimizer.register_load_state_dict_pre_hook(_load_count)
    return optimizer


def skip_step(optimizer: Optimizer) -> bool:
    """True (and counted) when the optimizer's gradients are not all finite: do not step then."""
    track_skipped_steps(optimizer)
    if grads_finite(optimizer):
        return False
    optimizer.skipped_steps += 1
    return True
