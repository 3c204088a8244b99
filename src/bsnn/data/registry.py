"""Dataset registry: ``bsnn.data.create(name, root=..., **options) -> DataBundle``."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset

__all__ = ["DataBundle", "DatasetInfo", "register_dataset", "create", "list_datasets", "dataset_signature",
           "dataset_info"]


@dataclass
class DataBundle:
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]   # one sample at one time step, e.g. (1, 28, 28)
    temporal: bool = False         # True: samples are [T, ...] sequences (one frame per time step)


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset without loading it."""
    num_classes: int
    input_shape: tuple[int, ...]
    temporal: bool = False


_DATASETS: dict[str, Callable[..., DataBundle]] = {}
_INFO: dict[str, DatasetInfo] = {}


def register_dataset(name: str, num_classes: int, input_shape: tuple[int, ...], temporal: bool = False):
    def deco(fn):
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = fn
        _INFO[name] = DatasetInfo(num_classes, tuple(input_shape), temporal)
        return fn
    return deco


def dataset_info(name: str) -> DatasetInfo:
    _get(name)
    return _INFO[name]


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def _get(name: str):
    if name not in _DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(list_datasets())}")
    return _DATASETS[name]


def dataset_signature(name: str) -> inspect.Signature:
    return inspect.signature(_get(name))


def create(name: str, **kwargs) -> DataBundle:
    return _get(name)(**kwargs)
