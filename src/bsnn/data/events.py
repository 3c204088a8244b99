"""Event-camera datasets, one frame per time step: samples are [T, C, H, W] (``temporal=True``).

* N-MNIST from the original binary files (``Train/<digit>/*.bin``, ``Test/<digit>/*.bin``),
  read by SpikingJelly's ``load_ATIS_bin`` and binned into T frames of event counts over equal time
  spans. The binning is ours (one ``np.bincount``): SpikingJelly's ``split_by="time"`` fails on a
  sample with an empty time bin.
* CIFAR10-DVS and DVS128 Gesture through SpikingJelly's readers (frames split by event number). Their
  roots must already hold the converted ``events_np/`` or every original file in ``download/`` with its
  published MD5: SpikingJelly deletes a file that fails that check and downloads it again, so bsnn
  checks first and refuses with one line. bsnn never deletes a user's file nor uses the network.

The BSO reference code fed the same frame at every time step; here step t gets frame t.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DatasetError, one_line
from .loader import TensorPairs
from .registry import DataBundle, data_root, register_dataset

__all__ = ["nmnist", "cifar10_dvs", "dvs128_gesture"]

NMNIST_HOWTO = ("a folder with Train/<digit>/*.bin and Test/<digit>/*.bin in the original N-MNIST format "
                "(an extracted archive: data.root=PATH/nmnist)")


def _time_frames(ev: dict, time_steps: int, h: int, w: int) -> np.ndarray:
    """Event counts [T, 2, H, W]; event i goes to frame floor((t_i - t_0) * T / (t_last - t_0 + 1))."""
    t = ev["t"].astype(np.int64)
    frame = (t - t[0]) * time_steps // (t[-1] - t[0] + 1)
    x, y, p = ev["x"].astype(np.int64), ev["y"].astype(np.int64), (ev["p"] != 0).astype(np.int64)
    if x.max() >= w or y.max() >= h:
        raise ValueError(f"event outside the {w}x{h} sensor")
    index = ((frame * 2 + p) * h + y) * w + x
    return np.bincount(index, minlength=time_steps * 2 * h * w).reshape(time_steps, 2, h, w)


def _nmnist_split(folder: Path, time_steps: int):
    from spikingjelly.datasets import load_ATIS_bin

    files = sorted(folder.glob("*/*.bin"))
    frames = np.zeros((len(files), time_steps, 2, 34, 34), np.uint8)
    labels = np.zeros(len(files), np.int64)
    for i, f in enumerate(files):
        if not f.parent.name.isdigit() or int(f.parent.name) > 9:
            raise DatasetError(f"N-MNIST: {f.parent} is not a digit folder (0-9); expected {NMNIST_HOWTO}")
        try:
            frames[i] = np.clip(_time_frames(load_ATIS_bin(f), time_steps, 34, 34), 0, 255)
        except (ValueError, IndexError, OSError) as e:
            raise DatasetError(f"N-MNIST: cannot read {f} ({e}); expected {NMNIST_HOWTO}") from None
        labels[i] = int(f.parent.name)
    return torch.from_numpy(frames), torch.from_numpy(labels)


class _Float(torch.nn.Module):
    def forward(self, x):
        return x.float()


@register_dataset("nmnist", num_classes=10, input_shape=(2, 34, 34), temporal=True)
def nmnist(root: str | None = None, time_steps: int = 10) -> DataBundle:
    """N-MNIST from an extracted folder: events binned into ``time_steps`` frames of counts ``[T, 2, 34, 34]``."""
    path = data_root(root, "N-MNIST", NMNIST_HOWTO)
    if str(path).endswith((".tar.gz", ".tgz")):
        raise DatasetError(f"N-MNIST: {path} is an archive; extract it (tar xzf) and pass the folder: {NMNIST_HOWTO}")
    if not (path / "Train").is_dir() or not (path / "Test").is_dir():
        raise DatasetError(f"N-MNIST: {path} has no Train/ and Test/ folders; expected {NMNIST_HOWTO}")
    x_tr, y_tr = _nmnist_split(path / "Train", time_steps)
    x_te, y_te = _nmnist_split(path / "Test", time_steps)
    if len(x_tr) == 0 or len(x_te) == 0:
        raise DatasetError(f"N-MNIST: no .bin files under {path}; expected {NMNIST_HOWTO}")
    return DataBundle(TensorPairs(x_tr, y_tr, _Float()), TensorPairs(x_te, y_te, _Float()),
                      num_classes=10, input_shape=(2, 34, 34), temporal=True)


def _sj_root(cls, root: str | None, name: str) -> Path:
    howto = (f"a SpikingJelly {cls.__name__} root holding download/ (the original files) or events_np/ "
             f"(already converted); see the SpikingJelly docs for where to obtain {name}")
    path = data_root(root, name, howto)
    building = [p.name for p in path.glob("*.building")] if path.is_dir() else []
    if building:
        raise DatasetError(f"{name}: {path / building[0]} marks a conversion that did not finish; remove it and "
                           f"the partial folder beside it (bsnn deletes nothing)")
    if (path / "events_np").is_dir():
        return path
    if not path.is_dir():
        raise DatasetError(f"{name}: {path} lacks the dataset; expected {howto}")
    _check_downloads(path / "download", cls.resource_url_md5(), name)
    return path


def _check_downloads(folder: Path, resources: list, name: str) -> None:
    """Every original file present with its published MD5, before SpikingJelly (which would delete a
    bad one and download it) sees the folder."""
    from torchvision.datasets.utils import calculate_md5

    for file, _url, md5 in resources:
        f = folder / file
        if not f.is_file():
            raise DatasetError(f"{name}: {f} is missing; put the original file there (bsnn downloads nothing)")
        if calculate_md5(str(f)) != md5:
            raise DatasetError(f"{name}: {f} is corrupted (MD5 differs from the published {md5}); replace it "
                               f"(bsnn deletes and downloads nothing)")


def _sj_dataset(cls, name: str, *args, **kwargs):
    """A SpikingJelly dataset; what its conversion raises becomes one line."""
    try:
        return cls(*args, **kwargs)
    except (RuntimeError, OSError, ValueError, NotImplementedError, EOFError) as e:
        raise DatasetError(one_line(f"{name}: SpikingJelly cannot read {args[0] if args else ''} "
                                    f"({type(e).__name__}: {e})", 300)) from None


class _DVSFrames(torch.utils.data.Dataset):
    """SpikingJelly frames [T, 2, H, W] resized to ``size`` with optional flip/roll augmentation."""

    def __init__(self, base, indices, size: int, augment: bool):
        self.base, self.indices, self.size, self.augment = base, list(indices), size, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, y = self.base[self.indices[i]]
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.augment:   # the BSO (hamingsi) loader: random horizontal flip and roll by up to 5 px
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            dx, dy = torch.randint(-5, 6, (2,)).tolist()
            x = torch.roll(x, (dy, dx), (-2, -1))
        return x, int(y)


@register_dataset("cifar10_dvs", num_classes=10, input_shape=(2, 48, 48), temporal=True)
def cifar10_dvs(root: str | None = None, time_steps: int = 10, size: int = 48, augment: bool = True) -> DataBundle:
    """10 frames split by event count, resized to 48x48; 90/10 per-class split (first 90 % of each class)."""
    from spikingjelly.datasets.cifar10_dvs import CIFAR10DVS

    path = _sj_root(CIFAR10DVS, root, "CIFAR10-DVS")
    base = _sj_dataset(CIFAR10DVS, "CIFAR10-DVS", str(path), data_type="frame", frames_number=time_steps,
                       split_by="number")
    targets = np.asarray([s[1] for s in base.samples]) if hasattr(base, "samples") else \
        np.asarray([base[i][1] for i in range(len(base))])
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(targets == c)
        k = int(round(0.9 * len(idx)))
        train_idx += idx[:k].tolist()
        test_idx += idx[k:].tolist()
    return DataBundle(_DVSFrames(base, train_idx, size, augment), _DVSFrames(base, test_idx, size, False),
                      num_classes=10, input_shape=(2, size, size), temporal=True)


@register_dataset("dvs128_gesture", num_classes=11, input_shape=(2, 48, 48), temporal=True)
def dvs128_gesture(root: str | None = None, time_steps: int = 16, size: int = 48,
                   augment: bool = True) -> DataBundle:
    """DVS128 Gesture in its own train/test split: ``time_steps`` frames split by event count, resized
    to ``size`` x ``size``; ``augment``: random flip and roll of the training samples."""
    from spikingjelly.datasets.dvs128_gesture import DVS128Gesture

    path = _sj_root(DVS128Gesture, root, "DVS128 Gesture")
    tr, te = (_sj_dataset(DVS128Gesture, "DVS128 Gesture", str(path), train=train, data_type="frame",
                          frames_number=time_steps, split_by="number") for train in (True, False))
    return DataBundle(_DVSFrames(tr, range(len(tr)), size, augment), _DVSFrames(te, range(len(te)), size, False),
                      num_classes=11, input_shape=(2, size, size), temporal=True)
