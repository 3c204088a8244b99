"""Dataset registry: ``bsnn.data.create(name, root=..., **options) -> DataBundle``."""
from __future__ import annotations

from pathlib import Path

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError, did_you_mean, one_line

__all__ = ["DataBundle", "DatasetInfo", "register_dataset", "create", "list_datasets", "dataset_signature",
           "dataset_info"]


@dataclass
class DataBundle:
    """The train and test splits of a dataset, with its number of classes and sample shape."""
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]   # one sample at one time step, e.g. (1, 28, 28)
    temporal: bool = False         # True: samples are [T, ...] sequences (one frame per time step)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset without loading it (``num_classes`` None: it depends
    on the files, e.g. the class folders of ``audio_folder``)."""
    num_classes: int | None
    input_shape: tuple[int, ...]
    temporal: bool = False


_DATASETS: dict[str, Callable[..., DataBundle]] = {}
_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, num_classes: int | None, input_shape: tuple[int, ...], temporal: bool = False):
    """Decorator registering a dataset factory under ``name`` with its :class:`DatasetInfo`."""
    def deco(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = fn
        _INFO[name] = DatasetInfo(num_classes, tuple(input_shape), temporal)
        return fn
    return deco


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset (``KeyError`` for an unknown name)."""
    _get(name)
    return _INFO[name]


def list_datasets() -> list[str]:
    """The names of all registered datasets, sorted."""
    return sorted(_DATASETS)


def _get(name: str):
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}{did_you_mean(name, _DATASETS)}; known: {', '.join(list_datasets())}")
    return _DATASETS[name]


def dataset_signature(name: str) -> inspect.Signature:
    """The signature of the factory of ``name``: the options that ``create`` accepts."""
    return inspect.signature(_get(name))


def create(name: str, **kwargs) -> DataBundle:
    """Build a dataset and check its content (:func:`check_bundle`)."""
    bundle = _get(name)(**kwargs)
    check_bundle(name, bundle)
    return bundle


def _labels(ds: Dataset) -> torch.Tensor | None:
    """All labels, where the dataset holds them (``y``, ``targets`` or ``labels``)."""
    for attr in ("y", "targets", "labels"):
        v = getattr(ds, attr, None)
        if v is not None:
            return torch.as_tensor(np.asarray(v))
    return None


def data_root(root: str | None, dataset: str, howto: str) -> Path:
    """``root`` as a path, or a one-line ``DatasetError`` saying what ``dataset`` needs when it is unset."""
    if not root:
        raise DatasetError(f"{dataset} needs a data root (data.root=PATH): {howto}")
    return Path(root).expanduser()


def read_npz(path, keys: tuple[str, ...], dataset: str, howto: str) -> list[np.ndarray]:
    """The arrays ``keys`` of an ``.npz`` (no pickles), or a one-line ``DatasetError`` for whatever numpy
    raises on a broken file (bad zip, truncated or malformed ``.npy``, missing key)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return [np.asarray(z[k]) for k in keys]
    except Exception as e:  # noqa: BLE001  (every decoding failure means: not the expected file)
        raise DatasetError(one_line(f"{dataset}: {path} is not a valid .npz ({type(e).__name__}: {e}); "
                                    f"expected {howto}", 400)) from None


def check_bundle(name: str, bundle: DataBundle) -> None:
    """Content errors as one-line ``DatasetError`` when the dataset is built, not mid-training: empty
    splits, labels out of [0, num_classes) or not one integer per sample, samples of another shape
    than ``input_shape`` (per time step), non-finite inputs. Labels are checked in full where the
    dataset holds them, samples through the first of each split (in-memory tensors in full, by
    ``TensorPairs``); a lazily read file that is broken fails when it is read, as a ``DatasetError``."""
    for split, ds in (("train", bundle.train), ("test", bundle.test)):
        if len(ds) == 0:
            raise DatasetError(f"{name}: the {split} split is empty")
        y = _labels(ds)
        if y is not None and (y.ndim != 1 or y.is_floating_point() or len(y) != len(ds)):
            raise DatasetError(f"{name}: {split} labels must be one integer per sample, got shape {tuple(y.shape)}")
        if y is not None and (int(y.min()) < 0 or int(y.max()) >= bundle.num_classes):
            raise DatasetError(f"{name}: {split} labels must be in [0, {bundle.num_classes}), found "
                               f"{int(y.min())}..{int(y.max())}")
        try:
            x, label = ds[0]
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001  (whatever a broken file raises while it is decoded)
            raise DatasetError(one_line(f"{name}: cannot read the first {split} sample "
                                        f"({type(e).__name__}: {e})", 300)) from None
        x = torch.as_tensor(x)
        shape = tuple(x.shape[1:] if bundle.temporal else x.shape)
        if shape != tuple(bundle.input_shape):
            raise DatasetError(f"{name}: {split} samples have shape {shape}"
                               f"{' per time step' if bundle.temporal else ''}, expected {tuple(bundle.input_shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DatasetError(f"{name}: {split} inputs hold NaN or inf values")
        if not 0 <= int(label) < bundle.num_classes:
            raise DatasetError(f"{name}: {split} label {int(label)} is not in [0, {bundle.num_classes})")
