"""BSO and T-BSO (Liang et al., ICML 2025): latent-free optimizers for binary weights.

Per binary tensor W (exactly ±1) the state is one momentum M (same shape, fp32); T-BSO adds one scalar
v[t] per time step t. With ``beta1`` the weight on history (paper convention, 1 - 1e-3)::

    M    <- beta1 * M + (1 - beta1) * G[t]                       (eq. 11 / 13)
    v[t] <- beta2 * v[t] + (1 - beta2) * mean(G[t]^2)           (T-BSO, eq. 14)
    thr  =  threshold                          (BSO)
            threshold * sqrt(v[t] + eps)       (T-BSO)
    W    <- -W where W * M > thr (strict), else W              (eq. 12 / 14)

Strict comparison, so ``W*M == thr`` keeps the weight and a weight is never 0 (the reference code's
``sign(r*w)`` can produce 0). ``momentum_reset=True`` zeroes M where a weight flipped, as the reference
code's BSO branch does (not in the paper).

Real-valued parameters (first/last layer, BN, ...) are updated by a wrapped torch optimizer (SGD by
default). Its param groups are *the same dicts* as this optimizer's real groups, so an LR scheduler
attached to the BSO object really changes their learning rate (the reference code's scheduler changed
an unused value). The two optimizers also share one ``state`` dict, so ``state_dict`` is one round trip.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from ..nn.binary import is_binary, is_latent_binary
from .nonfinite import all_finite, track_skipped_steps

__all__ = ["BSO", "TBSO", "bso_update", "FUSED_MIN_NUMEL"]


def _flip_(w: torch.Tensor, m: torch.Tensor, thr, momentum_reset: bool) -> None:
    flip = torch.mul(w, m).gt_(thr)          # 1.0 where w*m > thr
    w.addcmul_(w, flip, value=-2.0)          # w -> -w where flip
    if momentum_reset:
        m.mul_(1.0 - flip)


def _mean_squares(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """mean(G²) per tensor, in float32 at least (a half-precision sum of squares would overflow)."""
    grads = [g if g.dtype in (torch.float32, torch.float64) else g.float() for g in grads]
    if grads[0].is_cuda:
        sq = torch._foreach_norm(grads)
        torch._foreach_mul_(sq, sq)
    else:  # on the CPU a dot product is the faster sum of squares
        sq = [torch.dot(g.reshape(-1), g.reshape(-1)) for g in grads]
    torch._foreach_div_(sq, [float(g.numel()) for g in grads])
    return sq


def bso_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    momenta: list[torch.Tensor],
    v_t: list[torch.Tensor] | None,
    *,
    beta1: float,
    threshold: float,
    beta2: float = 0.0,
    eps: float = 0.0,
    momentum_reset: bool = False,
    foreach: bool | None = None,
    mean_squares: list[torch.Tensor] | None = None,
) -> None:
    """Functional BSO/T-BSO step (in place). ``v_t`` holds, per tensor, the 0-d view ``v[t]`` (T-BSO)
    or is ``None`` (BSO); ``mean_squares``, T-BSO's mean(G²) per tensor when already computed.
    ``foreach`` (None: on CUDA) uses ``torch._foreach_*`` kernels on the tensors grouped by device and
    dtype. No value ever leaves the device."""
    if not params:
        return
    if v_t is not None and mean_squares is None:
        mean_squares = _mean_squares(grads)
    if foreach is None:
        foreach = all(p.is_cuda for p in params)
    if not foreach:
        for i, (w, g, m) in enumerate(zip(params, grads, momenta)):
            m.lerp_(g, 1.0 - beta1)
            thr = threshold
            if v_t is not None:
                v_t[i].mul_(beta2).add_(mean_squares[i], alpha=1.0 - beta2)
                thr = v_t[i].add(eps).sqrt_().mul_(threshold)
            _flip_(w, m, thr, momentum_reset)
        return
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for idx in groups.values():
        ws, gs, ms = [params[i] for i in idx], [grads[i] for i in idx], [momenta[i] for i in idx]
        torch._foreach_lerp_(ms, gs, 1.0 - beta1)
        if v_t is None:
            thresholds = [threshold] * len(idx)
        else:
            vs = [v_t[i] for i in idx]
            torch._foreach_mul_(vs, beta2)
            torch._foreach_add_(vs, [mean_squares[i] for i in idx], alpha=1.0 - beta2)
            thresholds = torch._foreach_add(vs, eps)
            torch._foreach_sqrt_(thresholds)
            torch._foreach_mul_(thresholds, threshold)
        for w, m, thr in zip(ws, ms, thresholds):
            _flip_(w, m, thr, momentum_reset)


def _fused_update(params, grads, momenta, v_t, mean_squares, beta1: torch.Tensor, threshold: torch.Tensor,
                  beta2: torch.Tensor, eps: torch.Tensor, momentum_reset: bool) -> None:
    """The same update written per element, for ``torch.compile`` to fuse into one pass per tensor
    (T-BSO's mean(G^2) comes computed: it doubles as the non-finite check). Hyperparameters are 0-d
    tensors, so a flip schedule changing them does not compile again."""
    for i, (w, g, m) in enumerate(zip(params, grads, momenta)):
        m.lerp_(g, 1.0 - beta1)
        if v_t is None:
            thr = threshold
        else:
            v_t[i].mul_(beta2).add_((1.0 - beta2) * mean_squares[i])
            thr = threshold * torch.sqrt(v_t[i] + eps)
        flip = w * m > thr
        w.copy_(torch.where(flip, -w, w))
        if momentum_reset:
            m.copy_(torch.where(flip, 0.0, m))


_compiled_update = None
_compile_failed: set[str] = set()       # device types where inductor did not work: fall back quietly


def _fused(device: torch.device, explicit: bool, params, grads, momenta, v_t, mean_squares, group: dict) -> bool:
    """Run the compiled update; False (nothing changed) where it cannot run and was not asked for."""
    global _compiled_update
    if device.type in _compile_failed and not explicit:
        return False
    if _compiled_update is None:
        _compiled_update = torch.compile(_fused_update, dynamic=False)
    hyper = [torch.tensor(float(group.get(k, 0.0)), device=device) for k in ("beta1", "threshold", "beta2", "eps")]
    try:
        _compiled_update(params, grads, momenta, v_t, mean_squares, *hyper, group["momentum_reset"])
    except torch._dynamo.exc.TorchDynamoException:  # compilation failed (no C++ compiler, no Triton):
        if explicit:                                  # before any tensor was touched
            raise
        _compile_failed.add(device.type)
        return False
    return True


FUSED_MIN_NUMEL = 1 << 20     # fused=None compiles for groups this large (VGG-11: 9.2 M binary weights)


def _fused_by_default(params: list[torch.Tensor]) -> bool:
    """``fused=None``: the compiled update where it pays for its compilation (about a second per set of
    shapes on a CPU): groups of at least ``FUSED_MIN_NUMEL`` binary weights, on CUDA with Triton or on
    the CPU, unless inductor already failed there. Small models keep the eager kernels."""
    device = params[0].device
    if device.type in _compile_failed or sum(p.numel() for p in params) < FUSED_MIN_NUMEL:
        return False
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return False
        return has_triton()
    return device.type == "cpu"


class BSO(Optimizer):
    """Binary Spiking Online optimizer.

    Args:
        params: parameters or param groups; binary weights (``bsnn.nn.is_binary``) get the flip rule,
            all others go to ``real_optimizer``. A mixed group is split into a binary and a real group.
        lr: learning rate of the real-valued parameters (schedulers act on it).
        threshold: flip threshold gamma (paper: 5e-7 CIFAR, 1e-6 DVS/ImageNet).
        beta1: momentum weight on history (paper: 1 - 1e-3; the reference code passes ``1 - beta1``).
        momentum_reset: zero the momentum of flipped weights (reference code's BSO branch).
        real_optimizer: torch optimizer class for real parameters; ``real_optimizer_kwargs`` its options.
        foreach: use ``torch._foreach_*`` kernels on tensors grouped by device and dtype; None (default):
            on CUDA, as torch.optim decides.
        fused: run the update through ``torch.compile``, which fuses it into about one memory pass per
            tensor (needs inductor: a C++ compiler on CPU, Triton on GPU; the first step compiles, once
            per set of tensor shapes). None (default): for param groups of at least ``FUSED_MIN_NUMEL``
            binary weights, falling back quietly to the eager kernels where inductor does not work;
            False: never; True: always (errors raise).
        skip_nonfinite: skip a step whose gradients (binary or real) are not all finite, leaving
            weights, momenta and v untouched, and count it in ``skipped_steps`` (saved in
            ``state_dict``); costs one host sync per step, like ``GradScaler``. Default True.
    """

    per_step_threshold = False       # T-BSO: a threshold from v[t] per time step

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.1,
        *,
        threshold: float = 5e-7,
        beta1: float = 1 - 1e-3,
        momentum_reset: bool = False,
        real_optimizer: type[Optimizer] = torch.optim.SGD,
        real_optimizer_kwargs: dict[str, Any] | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        skip_nonfinite: bool = True,
    ):
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        if not 0.0 <= beta1 < 1.0:
            raise ValueError(f"beta1 must be in [0, 1), got {beta1}")
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        defaults = dict(lr=lr, threshold=threshold, beta1=beta1, momentum_reset=momentum_reset,
                        foreach=foreach, fused=fused, **self._extra_defaults())
        self.real_optimizer: Optimizer | None = None
        self.skip_nonfinite = skip_nonfinite
        super().__init__(params, defaults)
        track_skipped_steps(self)
        real_groups = [g for g in self.param_groups if not g["binary"]]
        if real_groups:
            self.real_optimizer = real_optimizer(real_groups, lr=lr, **(real_optimizer_kwargs or {}))
        self._link_real_optimizer()

    def _extra_defaults(self) -> dict[str, Any]:
        """Group options a subclass adds (T-BSO: ``beta2``, ``eps``)."""
        return {}

    def _link_real_optimizer(self) -> None:
        if self.real_optimizer is not None:
            self.real_optimizer.param_groups = [g for g in self.param_groups if not g["binary"]]
            self.real_optimizer.state = self.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        if any(is_latent_binary(p) for p in params):
            raise ValueError("BSO keeps no latent weights: latent-weight layers (LatentBinary*) are "
                             "trained with SGD/Adam through their straight-through estimator, not BSO")
        for binary in (True, False):
            part = [p for p in params if is_binary(p) == binary]
            if not part:
                continue
            group = {**param_group, "params": part, "binary": binary}
            # Real groups take only ``lr`` from our defaults: keys such as ``eps`` mean something else
            # to the wrapped optimizer (Adam), which fills in its own defaults.
            defaults, self.defaults = self.defaults, (
                self.defaults if binary else {"lr": self.defaults["lr"]})
            try:
                super().add_param_group(group)
            finally:
                self.defaults = defaults
            if not binary and self.real_optimizer is not None:
                self.real_optimizer.add_param_group(group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link_real_optimizer()

    def binary_groups(self):
        """The param groups of binary weights (the others belong to the wrapped real optimizer)."""
        return (g for g in self.param_groups if g["binary"])

    def _v_slot(self, state: dict, p: torch.Tensor, t: int) -> torch.Tensor | None:
        return None

    def _gather(self, group: dict, t: int | None) -> tuple:
        """``(group, params, grads, momenta, v[t] views)`` of a binary group's weights that have a gradient."""
        params, grads, momenta, v_t = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("BSO does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            momenta.append(state["momentum"])
            v_t.append(self._v_slot(state, p, t))
        return group, params, grads, momenta, v_t

    def _grads_finite(self, work: list[tuple], squares: list) -> bool:
        """Every gradient finite: the binary ones through their mean squares where T-BSO has them (no
        second read), all others by min/max (``bsnn.optim.nonfinite``); one host sync."""
        covered = {id(p) for (_, params, *_), sq in zip(work, squares) if sq is not None for p in params}
        others = [p.grad for g in self.param_groups for p in g["params"]
                  if p.grad is not None and id(p) not in covered]
        return all_finite(others, [v for sq in squares if sq is not None for v in sq])

    @torch.no_grad()
    def step(self, closure: Callable | None = None, t: int | None = None):
        """One update. ``t`` is the time-step index (required by T-BSO, ignored by BSO)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [w for w in (self._gather(group, t) for group in self.binary_groups()) if w[1]]
        # T-BSO's mean(G²) per tensor: needed for v[t], and not finite when its gradient is not (nor when
        # it overflows: gradients beyond ~1e19 count as non-finite)
        squares = [_mean_squares(grads) if self.per_step_threshold else None for _, _, grads, _, _ in work]
        if self.skip_nonfinite and not self._grads_finite(work, squares):
            self.skipped_steps += 1
            return loss
        if self.real_optimizer is not None:
            self.real_optimizer.step()
        for (group, params, grads, momenta, v_t), sq in zip(work, squares):
            fused = group.get("fused")               # None also for states saved before the option
            v_t = v_t if self.per_step_threshold else None
            if (fused or (fused is None and _fused_by_default(params))) and \
                    _fused(params[0].device, bool(fused), params, grads, momenta, v_t, sq, group):
                continue
            bso_update(
                params, grads, momenta, v_t,
                beta1=group["beta1"], threshold=group["threshold"],
                beta2=group.get("beta2", 0.0), eps=group.get("eps", 0.0),
                momentum_reset=group["momentum_reset"], foreach=group.get("foreach"), mean_squares=sq,
            )
        return loss


class TBSO(BSO):
    """Temporal-aware BSO: the flip threshold is ``threshold * sqrt(v[t] + eps)`` where ``v[t]`` is a
    running mean of ``mean(G^2)`` per binary tensor *and time step* (one scalar each, on the device).

    ``beta2`` is the weight on history (paper: 1 - 1e-5). ``eps`` sits inside the square root as in the
    paper; the default 1e-20 matches the reference code's ``+1e-10`` outside it near ``v = 0``.
    ``time_steps`` preallocates v; a larger ``t`` grows v (see :meth:`resize_time_steps`).
    """

    per_step_threshold = True

    def __init__(self, params: Iterable, lr: float = 0.1, *, threshold: float = 5e-7,
                 beta1: float = 1 - 1e-3, beta2: float = 1 - 1e-5, eps: float = 1e-20, time_steps: int = 1,
                 momentum_reset: bool = False, real_optimizer: type[Optimizer] = torch.optim.SGD,
                 real_optimizer_kwargs: dict[str, Any] | None = None, foreach: bool | None = None,
                 fused: bool | None = None, skip_nonfinite: bool = True):
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        self.time_steps = int(time_steps)
        self._beta2_eps = dict(beta2=beta2, eps=eps)
        super().__init__(params, lr, threshold=threshold, beta1=beta1, momentum_reset=momentum_reset,
                         real_optimizer=real_optimizer, real_optimizer_kwargs=real_optimizer_kwargs,
                         foreach=foreach, fused=fused, skip_nonfinite=skip_nonfinite)

    def _extra_defaults(self) -> dict[str, Any]:
        return self._beta2_eps

    def _v_slot(self, state: dict, p: torch.Tensor, t: int | None) -> torch.Tensor:
        if t is None:
            raise TypeError("T-BSO needs the time-step index: call step(t=...)")
        if t < 0:
            raise ValueError(f"time-step index must be >= 0, got {t}")
        if "v" not in state:
            state["v"] = torch.zeros(self.time_steps, dtype=torch.float32, device=p.device)
        if t >= state["v"].numel():
            state["v"] = self._grown(state["v"], max(t + 1, self.time_steps))
        return state["v"][t]

    @staticmethod
    def _grown(v: torch.Tensor, n: int) -> torch.Tensor:
        # New slots start at the mean of the known ones: a fresh 0 would make the threshold vanish and
        # flip every weight whose momentum agrees with it, the opposite of what fine-tuning wants.
        if n <= v.numel():
            return v[:n].clone()
        return torch.cat([v, v.mean().expand(n - v.numel())])

    def resize_time_steps(self, time_steps: int) -> None:
        """Change T (e.g. T=1 pre-training -> T=4 fine-tuning): v is cut or grown for every tensor."""
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        self.time_steps = int(time_steps)
        for group in self.binary_groups():
            for p in group["params"]:
                state = self.state.get(p)
                if state and "v" in state:
                    state["v"] = self._grown(state["v"], time_steps)
