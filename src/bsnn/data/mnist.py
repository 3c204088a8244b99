"""MNIST from a local root: an ``.npz`` (x_train, y_train, x_test, y_test) or torchvision's folder format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetError
from .loader import TensorPairs
from .registry import DataBundle, data_root, read_npz, register_dataset

MEAN, STD = 0.1307, 0.3081
HOWTO = ("an .npz with x_train, y_train, x_test, y_test (uint8, N x 28 x 28), or a torchvision root "
         "holding MNIST/raw/*-ubyte (torchvision.datasets.MNIST(root, download=True) on a machine "
         "with internet creates it)")


def _normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x)).float().div_(255.0)
    return x.sub_(MEAN).div_(STD).unsqueeze(1)


def _from_npz(path: Path):
    x_tr, y_tr, x_te, y_te = read_npz(path, ("x_train", "y_train", "x_test", "y_test"), "MNIST", HOWTO)
    if x_tr.ndim != 3 or x_tr.shape[1:] != (28, 28) or len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"MNIST: {path} has arrays of shape {x_tr.shape}/{y_tr.shape}; expected {HOWTO}")
    return x_tr, y_tr, x_te, y_te


def _from_torchvision(root: Path):
    from torchvision.datasets import MNIST
    try:
        tr, te = MNIST(str(root), train=True, download=False), MNIST(str(root), train=False, download=False)
    except RuntimeError as e:
        raise DatasetError(f"MNIST: no dataset at {root} ({e}); expected {HOWTO}") from None
    return tr.data, tr.targets, te.data, te.targets


@register_dataset("mnist", num_classes=10, input_shape=(1, 28, 28))
def mnist(root: str | None = None) -> DataBundle:
    """MNIST from an ``.npz``, a folder holding ``mnist.npz``, or a torchvision root; inputs normalised,
    ``[N, 1, 28, 28]`` float."""
    path = data_root(root, "MNIST", HOWTO)
    if not path.exists():
        raise DatasetError(f"MNIST: {path} does not exist; expected {HOWTO}")
    if path.is_file() or path.suffix == ".npz":
        x_tr, y_tr, x_te, y_te = _from_npz(path)
    elif (path / "mnist.npz").is_file():
        x_tr, y_tr, x_te, y_te = _from_npz(path / "mnist.npz")
    else:
        x_tr, y_tr, x_te, y_te = _from_torchvision(path)
    return DataBundle(TensorPairs(_normalise(x_tr), torch.as_tensor(np.asarray(y_tr))),
                      TensorPairs(_normalise(x_te), torch.as_tensor(np.asarray(y_te))),
                      num_classes=10, input_shape=(1, 28, 28))
