"""Atomic checkpoint files, safe loading and RNG state capture.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed
over the target (``os.replace`` is atomic on POSIX), and the folder is fsynced: a crash at any moment
leaves either the old file or the new one, never half of one. The file gets the mode a plain ``open``
would give it (``0666 & ~umask``), not ``mkstemp``'s 0600. A crash between ``mkstemp`` and the rename
leaves a ``.NAME.*.tmp`` file behind: :func:`clean_stale_temporaries` removes those when a run starts
or resumes.

Loading never runs code from the file: every load is ``torch.load(weights_only=True)``, which only
rebuilds tensors and plain Python containers. Checkpoints therefore hold tensors and plain types only
(RNG states included, see :func:`rng_state`); a file that would need unsafe unpickling (a checkpoint
of an older bsnn, or anything else) is refused with one line, never loaded another way.
"""
from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError

__all__ = ["atomic_save", "atomic_write_bytes", "atomic_write_text", "load", "load_run", "load_model_state", "rng_state",
           "set_rng_state", "clean_stale_temporaries", "CheckpointError"]

GUARANTEES = "README, 'Guarantees'"


class CheckpointError(UserError):
    """A file that is not a loadable bsnn checkpoint."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask_mode() -> int:
    mask = os.umask(0)           # the only way to read the umask; set it straight back
    os.umask(mask)
    return 0o666 & ~mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _umask_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (temporary file, fsync, rename)."""
    _atomic(Path(path), lambda f: f.write(text.encode()))


def clean_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove ``.*.tmp`` files that interrupted atomic writes left in ``folder`` (call while no other
    process writes there: at the start or resume of a run, on its main process). Returns them."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load(path: str | Path, map_location="cpu") -> Any:
    """``torch.load(weights_only=True)``; any failure is one ``CheckpointError`` line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with warnings.catch_warnings():          # e.g. "pickle protocol 4": the error below says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" in str(e) or "global" in str(e):    # a class or function the safe unpickler refuses
            raise CheckpointError(
                f"{path} holds Python objects that only unsafe unpickling would load (a checkpoint of an "
                f"older bsnn, or not a bsnn file); bsnn never loads those ({GUARANTEES})") from None
        raise CheckpointError(f"{path} is not a bsnn checkpoint (not a file torch's safe loader can read)") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            zipfile.BadZipFile, UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path} is not a bsnn checkpoint ({type(e).__name__}: {_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def load_run(path: str | Path, map_location="cpu") -> dict:
    """A bsnn run checkpoint: a dict with ``config`` (a mapping), ``model`` (tensors) and ``epoch``."""
    state = load(path, map_location)
    ok = (isinstance(state, dict) and isinstance(state.get("config"), dict)
          and isinstance(state.get("model"), dict) and isinstance(state.get("epoch"), int)
          and all(isinstance(v, torch.Tensor) for v in state["model"].values()))
    if not ok:
        raise CheckpointError(f"{path} is not a bsnn checkpoint (no config, model and epoch)")
    if "data_info" not in state and isinstance(state["config"].get("model"), dict):
        # written before model.bn_stats existed (with data_info): its BatchNorm statistics are shared
        state["config"]["model"].setdefault("bn_stats", "shared")
    return state


def load_model_state(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict`` whose failures (missing keys, other shapes) are one line."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        hint = ("; BatchNorm statistics differ: check model.bn_stats (shared or per_step)"
                if "running_mean" in str(e) else "")
        raise CheckpointError(f"{path} does not fit this model ({_first_line(e)}){hint}") from None


def rng_state() -> dict:
    """Every RNG state as tensors and plain types (loadable with ``weights_only=True``)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore every RNG state saved by :func:`rng_state` (CUDA's only where CUDA is available)."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
