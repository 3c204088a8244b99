"""Datasets: digits split, MNIST from .npz and torchvision folders, clear errors."""
import gzip
import struct

import numpy as np
import pytest
import torch

from bsnn.data import create, make_loader
from bsnn.errors import DatasetError


def test_digits_seeded_split():
    a, b = create("digits"), create("digits")
    assert len(a.train) == 1437 and len(a.test) == 360
    assert torch.equal(a.train.x, b.train.x)
    assert a.train.x.shape[1:] == (1, 8, 8) and 0 <= a.train.x.min() and a.train.x.max() <= 1
    assert not torch.equal(create("digits", split_seed=1).train.x, a.train.x)


def fake_mnist(n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))


def test_mnist_from_npz_file_and_folder(tmp_path):
    x_tr, y_tr, x_te, y_te = fake_mnist()
    np.savez(tmp_path / "mnist.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    for root in (tmp_path / "mnist.npz", tmp_path):
        b = create("mnist", root=str(root))
        assert len(b.train) == 20 and len(b.test) == 10 and b.input_shape == (1, 28, 28)
        assert torch.equal(b.train.y, torch.tensor(y_tr).long())


def _idx(path, array, magic):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for d in array.shape:
            f.write(struct.pack(">I", d))
        f.write(array.tobytes())


def test_mnist_from_torchvision_folder(tmp_path):
    x_tr, y_tr, x_te, y_te = fake_mnist()
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "train-images-idx3-ubyte", x_tr, 2051)
    _idx(raw / "train-labels-idx1-ubyte", y_tr, 2049)
    _idx(raw / "t10k-images-idx3-ubyte", x_te, 2051)
    _idx(raw / "t10k-labels-idx1-ubyte", y_te, 2049)
    b = create("mnist", root=str(tmp_path))
    assert len(b.train) == 20 and torch.equal(b.test.y, torch.tensor(y_te).long())


@pytest.mark.parametrize("name, setup, message", [
    ("m.npz", lambda p: None, "does not exist"),
    ("folder", lambda p: p.mkdir(), "no dataset at"),
    ("m.npz", lambda p: p.write_bytes(b"garbage"), "not a valid MNIST .npz"),
])
def test_mnist_errors_are_one_line(tmp_path, name, setup, message):
    root = tmp_path / name
    setup(root)
    with pytest.raises(DatasetError, match=message) as e:
        create("mnist", root=str(root))
    assert "\n" not in str(e.value) and str(root) in str(e.value)


def test_loader_order_depends_only_on_seed_and_epoch():
    ds = create("digits").train
    first = lambda s, e: next(iter(make_loader(ds, 16, True, seed=s, epoch=e)))[1]  # noqa: E731
    assert torch.equal(first(0, 3), first(0, 3))
    assert not torch.equal(first(0, 3), first(0, 4))
