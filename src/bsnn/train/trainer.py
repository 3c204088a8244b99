"""One epoch loop for every method: train, evaluate, log (CSV), checkpoint atomically, resume.

Non-finite values (``docs/methods.md``, "Non-finite values"): a batch whose loss is NaN or inf adds
nothing to the epoch's metrics; after ``max_nonfinite`` such batches the next one stops the run with a
``NonFiniteError`` before anything of that epoch is saved, so the checkpoint keeps the last good epoch.
Optimizer steps with non-finite gradients are skipped where they happen (``bsnn.optim.skip_step``);
their running count is logged as ``skipped_steps``.

Files of a run folder: ``checkpoint.pt`` (the last epoch), ``best.pt`` (the epoch of the best test
accuracy so far: a hard link to that epoch's checkpoint, or a copy), ``metrics.csv``. Progress: a tqdm bar
on a terminal; otherwise (batch jobs, logs) a line with samples/s and the pass's ETA every ``log_every``
batches, or every 30 s when ``log_every`` is 0.
"""
from __future__ import annotations

import csv
import io
import itertools
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..data import DataBundle, make_loader
from ..errors import NonFiniteError, short
from . import distributed as dist
from ..measure.firing import FiringRateMeter
from ..measure.flips import FlipMonitor
from ..measure.gradients import GradientMonitor
from . import checkpoint as ckpt
from .evaluate import evaluate

__all__ = ["Trainer"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
PROGRESS_SECONDS = 30.0       # progress lines without a terminal (train.log_every=0)


class Trainer:
    """The epoch loop: training, evaluation, metrics, checkpoints and resume for one run."""
    def __init__(self, model: torch.nn.Module, method, optimizer, data: DataBundle, *, epochs: int,
                 batch_size: int, test_batch_size: int = 256, lr_scheduler=None, flip_scheduler=None,
                 scaler=None, device: str | torch.device = "cpu", seed: int = 0,
                 out_dir: str | Path | None = None, config: dict | None = None, progress: bool = True,
                 num_workers: int = 0, save_checkpoints: bool = True, metrics: bool = True,
                 tensorboard: bool = True, limit_batches: int | None = None, max_nonfinite: int = 0,
                 log_every: int = 0, log=print):
        self.model, self.method, self.optimizer, self.data = model, method, optimizer, data
        # the module itself (inside a DDP wrapper): evaluated, saved and measured without collectives
        self.net = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.main = dist.rank() == 0
        self.epochs, self.batch_size, self.test_batch_size = epochs, batch_size, test_batch_size
        self.lr_scheduler, self.flip_scheduler, self.scaler = lr_scheduler, flip_scheduler, scaler
        self.device = torch.device(device)
        self.seed, self.config, self.progress, self.num_workers = seed, config or {}, progress, num_workers
        self.out_dir = Path(out_dir) if out_dir else None
        self.save_checkpoints = save_checkpoints and self.out_dir is not None and self.main
        self.log = log if self.main else (lambda *a, **k: None)
        self.metrics, self.tensorboard = metrics, tensorboard
        self.limit_batches, self.log_every = limit_batches, log_every
        self.max_nonfinite, self.nonfinite = max_nonfinite, 0   # tolerated / seen non-finite batch losses
        self.last_evaluation = None                             # bsnn.train.Evaluation of the last epoch
        self._tb = None
        self.start_epoch = 0
        self.history: list[dict[str, Any]] = []

    # ---- one epoch -------------------------------------------------------------------------
    def _batches(self, ds, batch_size: int, shuffle: bool, epoch: int, desc: str):
        sampler = None
        if dist.is_distributed():
            if shuffle:
                sampler = torch.utils.data.DistributedSampler(ds, shuffle=True, seed=self.seed, drop_last=True)
                sampler.set_epoch(epoch)
            else:
                sampler = dist.ShardSampler(len(ds), dist.rank(), dist.world_size())
        loader = make_loader(ds, batch_size, shuffle, self.seed, epoch, self.num_workers, sampler=sampler)
        total = len(loader) if self.limit_batches is None else min(len(loader), self.limit_batches)
        if self.limit_batches:
            loader = itertools.islice(loader, self.limit_batches)
        if not (self.progress and self.main):
            return loader
        if sys.stderr.isatty():
            return tqdm(loader, desc=desc, total=total, leave=False, dynamic_ncols=True)
        return self._progress_lines(loader, total, batch_size * dist.world_size(), desc)

    def _progress_lines(self, loader, total: int, samples_per_batch: int, desc: str):
        """Yield from ``loader``, logging ``desc: batch i/total, samples/s, ETA`` every ``log_every``
        batches, or (``log_every=0``) at most every ``PROGRESS_SECONDS``."""
        t0 = last = time.perf_counter()
        for i, batch in enumerate(loader, 1):
            yield batch
            now = time.perf_counter()
            due = i % self.log_every == 0 if self.log_every else now - last >= PROGRESS_SECONDS
            if due and i < total:
                last, eta = now, (now - t0) / i * (total - i)
                self.log(f"{desc}: batch {i}/{total}, {i * samples_per_batch / (now - t0):,.1f} samples/s, "
                         f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch over the training set; returns train loss and accuracy (reduced over processes)."""
        self.net.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        n = 0
        batches = self._batches(self.data.train, self.batch_size, True, epoch, f"epoch {epoch + 1}")
        for i, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss, out = self.method.train_batch(self.model, x, y, self.optimizer, self.scaler)
            if not self._loss_finite(loss, epoch, i):
                continue
            loss_sum += loss * len(y)
            correct += (out.argmax(1) == y).sum()
            n += len(y)
        totals = dist.all_reduce_(torch.stack([loss_sum, correct.to(loss_sum.dtype),
                                               torch.tensor(float(n), device=self.device)]))
        dist.check_identical_binary_weights(self.net)
        seen = max(totals[2].item(), 1.0)
        return {"train_loss": totals[0].item() / seen, "train_acc": totals[1].item() / seen}

    def _loss_finite(self, loss: torch.Tensor, epoch: int, batch: int) -> bool:
        """False for a non-finite loss on any process (all agree); raises once too many were seen."""
        bad = dist.all_reduce_((~torch.isfinite(loss.detach())).float().reshape(1))
        if not bad.item():
            return True
        self.nonfinite += 1
        if self.nonfinite > self.max_nonfinite:
            kept = (f"{self.out_dir / CHECKPOINT} keeps epoch {epoch}" if self.save_checkpoints and epoch > 0
                    else "no checkpoint was written")
            raise NonFiniteError(
                f"epoch {epoch + 1}, batch {batch + 1}: the training loss is {loss.item()} "
                f"({self.nonfinite} non-finite losses, train.max_nonfinite={self.max_nonfinite}); stopped, "
                f"{kept}. Lower optim.lr or check the data (docs/methods.md, 'Non-finite values')")
        return False

    def evaluate(self, firing_rates: bool = False) -> dict[str, float]:
        """Test loss and accuracy (``bsnn.train.evaluate``); ``self.last_evaluation`` keeps the rest
        (per-step accuracy, the BatchNorm check)."""
        dist.broadcast_buffers_(self.net)      # DDP: every rank evaluates rank 0's BN statistics (saved ones)
        meter = FiringRateMeter(self.net)
        batches = self._batches(self.data.test, self.test_batch_size, False, 0, "eval")
        res = evaluate(self.net, batches, self.method, device=self.device, reduce=dist.all_reduce_,
                       record=meter.record if firing_rates else nullcontext)
        self.last_evaluation = res
        # firing rates: this process's shard of the test set
        return {"test_loss": res.loss, "test_acc": res.accuracy, **(meter.rates() if firing_rates else {})}

    def _hyperparameters(self) -> dict[str, float]:
        row = {"lr": self.optimizer.param_groups[-1]["lr"]}
        binary = [g for g in self.optimizer.param_groups if g.get("binary")]
        if binary:
            row["threshold"] = binary[0]["threshold"]
            row["beta1"] = binary[0]["beta1"]
        return row

    # ---- loop --------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` to ``epochs`` (resuming first when asked); returns the history rows."""
        if self.out_dir is not None and self.main:
            for tmp in ckpt.clean_stale_temporaries(self.out_dir):
                self.log(f"removed {tmp.name}, left by an interrupted write")
        if resume:
            self.resume()
        monitors = [FlipMonitor(self.net, self.optimizer), GradientMonitor(self.net, self.optimizer)] \
            if self.metrics else []
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self._run_epoch(epoch, monitors)
        finally:
            for m in monitors:
                m.remove()
            if self._tb is not None:
                self._tb.close()
        return self.history

    def _anneal(self, epoch: int) -> None:
        """Modules with ``anneal(progress)`` (e.g. ScaledSign's surrogate sharpness) follow training."""
        for m in self.net.modules():
            if hasattr(m, "anneal"):
                m.anneal(epoch / self.epochs)

    def _run_epoch(self, epoch: int, monitors: list) -> None:
        self._anneal(epoch)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1, **self._hyperparameters()}
        row.update(self.train_epoch(epoch))
        if hasattr(self.optimizer, "skipped_steps"):        # cumulative, see bsnn.optim.skip_step
            row["skipped_steps"] = self.optimizer.skipped_steps
        row["train_time_s"] = round(time.perf_counter() - t0, 3)
        teacher = getattr(self.method, "teacher", None)
        if teacher is not None:            # cumulative seconds spent computing the teacher's logits
            row["teacher_time_s"] = round(teacher.seconds, 3)
        row.update(self.evaluate(firing_rates=self.metrics))
        if self.last_evaluation.bn_gap is not None:     # batch-statistics minus eval-mode accuracy
            row["bn_gap"] = round(self.last_evaluation.bn_gap, 6)
        for m in monitors:
            row.update(m.epoch_end())
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        if self.flip_scheduler is not None:
            self.flip_scheduler.step()
        self.history.append(row)
        self.log(f"epoch {epoch + 1}/{self.epochs}  loss {row['train_loss']:.4f}  "
                 f"train {100 * row['train_acc']:.2f}%  test {100 * row['test_acc']:.2f}%  "
                 f"({row['train_time_s']:.1f} s)" + self._bn_note())
        if self.out_dir is not None and self.main:
            self._write_metrics()
            self._write_tensorboard(row)
        if self.save_checkpoints:
            path = self.save_checkpoint(epoch + 1)
            if row["test_acc"] >= max(r["test_acc"] for r in self.history):
                self._keep_best(path)

    def _bn_note(self) -> str:
        res = self.last_evaluation
        if res.bn_warning() is None:
            return ""
        return (f"  [BN statistics do not fit: {100 * res.bn_batch_accuracy:.1f}% with batch statistics, "
                f"{100 * res.bn_eval_accuracy:.1f}% with running ones]")

    # ---- persistence ---------------------------------------------------------------------------
    def _write_metrics(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.history)
        ckpt.atomic_write_text(buf.getvalue(), self.out_dir / METRICS)

    def _write_tensorboard(self, row: dict[str, Any]) -> None:
        if not self.tensorboard:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:          # tensorboard not installed: CSV only
                self.tensorboard = False
                return
            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, row["epoch"])
        self._tb.flush()

    def state_dict(self, epoch: int) -> dict[str, Any]:
        opt = lambda o: None if o is None else o.state_dict()  # noqa: E731
        return {
            "epoch": epoch,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": opt(self.lr_scheduler),
            "flip_scheduler": opt(self.flip_scheduler),
            "scaler": opt(self.scaler),
            "rng": ckpt.rng_state(),
            "history": self.history,
            "config": self.config,
            "data_info": {"num_classes": self.data.num_classes, "input_shape": list(self.data.input_shape),
                          "temporal": bool(self.data.temporal)},
            "nonfinite": self.nonfinite,
        }

    def save_checkpoint(self, epoch: int) -> Path:
        """Write ``checkpoint.pt`` for ``epoch`` atomically (rank 0); returns its path."""
        path = self.out_dir / CHECKPOINT
        ckpt.atomic_save(self.state_dict(epoch), path)
        return path

    def _keep_best(self, path: Path) -> None:
        """``best.pt`` <- this epoch's checkpoint, atomically: a hard link (no copy; the next epoch's
        checkpoint replaces ``checkpoint.pt`` by rename, so the link keeps this one), else a copy."""
        tmp = path.with_name(f".{BEST}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, path.with_name(BEST))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for obj, key in ((self.lr_scheduler, "lr_scheduler"), (self.flip_scheduler, "flip_scheduler"),
                         (self.scaler, "scaler")):
            if obj is not None and state.get(key) is not None:
                obj.load_state_dict(state[key])
        ckpt.set_rng_state(state["rng"])
        self.history = list(state.get("history", []))
        self.nonfinite = int(state.get("nonfinite", 0))
        self.start_epoch = state["epoch"]

    def resume(self, state: dict[str, Any] | None = None) -> bool:
        """Load ``out_dir/checkpoint.pt`` (or ``state``, already loaded from it); returns whether it did.
        The checkpoint must come from the same run: same model, method, optimizer and dataset."""
        path = self.out_dir / CHECKPOINT if self.out_dir else None
        if state is None:
            if path is None or not path.is_file():
                self.log("no checkpoint to resume from; starting fresh")
                return False
            state = ckpt.load_run(path, map_location=self.device)
        if self.config:
            same_run(state["config"], self.config, path)
        ckpt.load_model_state(self.net, state["model"], path)
        try:
            self.load_state_dict(state)
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError, OverflowError) as e:
            raise ckpt.CheckpointError(f"{path} cannot be resumed ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self.log(f"resumed from {path} after epoch {self.start_epoch}")
        return True


# What a resumed run must share with its checkpoint (the rest, e.g. epochs or data.root, may change).
SAME_RUN = (("model",), ("method", "name"), ("method", "time_steps"), ("method", "mode"), ("optim", "name"),
            ("data", "name"))


def same_run(saved: dict, cfg: dict, path) -> None:
    """Raise ``CheckpointError`` when ``cfg`` describes another run than the checkpoint's ``saved``."""
    for keys in SAME_RUN:
        a, b = saved, cfg
        for k in keys:
            a = a.get(k) if isinstance(a, dict) else None
            b = b.get(k) if isinstance(b, dict) else None
        if a != b:
            where = ".".join(keys)
            raise ckpt.CheckpointError(f"--resume: {path} was trained with another {where} "
                                       f"({short(a)} there, {short(b)} here); resume with the run's config.yaml")
