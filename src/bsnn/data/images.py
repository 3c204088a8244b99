"""Image datasets from local roots: CIFAR-10/100 (torchvision layout or a JPEG pack) and ImageNet folders.

CIFAR follows the BSO paper: per-dataset mean/std, RandomCrop(32, pad 4), horizontal flip, Cutout(16);
``autoaugment=True`` adds torchvision's CIFAR10 AutoAugment policy (the official script enables it, the
paper does not mention it). ImageNet: RandomResizedCrop(224) + flip; Resize(256) + CenterCrop(224).
"""
from __future__ import annotations

import io

import numpy as np
import torch
import torchvision.transforms.v2 as T
from torch.utils.data import Dataset

from ..errors import DatasetError
from .registry import DataBundle, data_root, read_npz, register_dataset
from .transforms import Cutout

__all__ = ["UInt8Images", "cifar_transforms"]

CIFAR_STATS = {10: ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
               100: ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class UInt8Images(Dataset):
    """Images held in memory as a uint8 [N, C, H, W] tensor; the transform runs per sample."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, torch.as_tensor(y).long(), transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(self.x[i]), self.y[i]


def cifar_transforms(classes: int, train: bool, augment: bool = True, autoaugment: bool = False,
                     cutout: int = 16):
    """The CIFAR transform of a uint8 ``[C, H, W]`` image: for training (with ``augment``) random crop,
    flip and optional AutoAugment, then scaling to [0, 1] and normalisation with the mean/std of CIFAR-``classes``,
    then Cutout of side ``cutout`` (0: none)."""
    mean, std = CIFAR_STATS[classes]
    ops: list = []
    if train and augment:
        ops += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
        if autoaugment:
            ops.append(T.AutoAugment(T.AutoAugmentPolicy.CIFAR10))
    ops += [T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    if train and augment and cutout > 0:
        ops.append(Cutout(cutout))
    return T.Compose(ops)


def _bundle(x_tr, y_tr, x_te, y_te, classes, augment, autoaugment, cutout) -> DataBundle:
    return DataBundle(UInt8Images(x_tr, y_tr, cifar_transforms(classes, True, augment, autoaugment, cutout)),
                      UInt8Images(x_te, y_te, cifar_transforms(classes, False)),
                      num_classes=classes, input_shape=(3, 32, 32))


def _torchvision_cifar(root: str | None, classes: int):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if classes == 10 else (CIFAR100, "cifar-100-python")
    howto = (f"a torchvision root holding {folder}/ (torchvision.datasets.{cls.__name__}(root, download=True) "
             f"on a machine with internet creates it)")
    path = data_root(root, f"CIFAR-{classes}", howto)
    try:
        tr, te = cls(str(path), train=True, download=False), cls(str(path), train=False, download=False)
    except RuntimeError as e:
        raise DatasetError(f"CIFAR-{classes}: no dataset at {path} ({e}); expected {howto}") from None
    to_x = lambda d: torch.from_numpy(np.ascontiguousarray(d.data)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return to_x(tr), torch.tensor(tr.targets), to_x(te), torch.tensor(te.targets)


@register_dataset("cifar10", num_classes=10, input_shape=(3, 32, 32))
def cifar10(root: str | None = None, augment: bool = True, autoaugment: bool = False, cutout: int = 16,
            subset: int = 0) -> DataBundle:
    """CIFAR-10 from a torchvision root, or from a JPEG pack (``.npz``, see ``cifar10_jpeg``)."""
    if root and str(root).endswith(".npz"):
        return cifar10_jpeg(root, augment, autoaugment, cutout, subset)
    x_tr, y_tr, x_te, y_te = _torchvision_cifar(root, 10)
    x_tr, y_tr = _subset(x_tr, y_tr, subset)
    return _bundle(x_tr, y_tr, x_te, y_te, 10, augment, autoaugment, cutout)


@register_dataset("cifar100", num_classes=100, input_shape=(3, 32, 32))
def cifar100(root: str | None = None, augment: bool = True, autoaugment: bool = False, cutout: int = 16,
             subset: int = 0) -> DataBundle:
    """CIFAR-100 from a torchvision root; ``subset``: train on a seeded random subset of that many samples (0: all)."""
    x_tr, y_tr, x_te, y_te = _torchvision_cifar(root, 100)
    x_tr, y_tr = _subset(x_tr, y_tr, subset)
    return _bundle(x_tr, y_tr, x_te, y_te, 100, augment, autoaugment, cutout)


def _subset(x, y, n: int):
    """A seeded random subset of ``n`` training samples (0: all)."""
    if not n or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:n]
    return x[idx], y[idx]


JPEG_HOWTO = ("an .npz with jpeg (uint8, all files concatenated), offsets (int64, N+1), label (uint8), "
              "split (uint8: 0 train, 1 test)")


@register_dataset("cifar10_jpeg", num_classes=10, input_shape=(3, 32, 32))
def cifar10_jpeg(root: str | None = None, augment: bool = True, autoaugment: bool = False, cutout: int = 16,
                 subset: int = 0) -> DataBundle:
    """CIFAR-10 from a JPEG pack, decoded once into memory (JPEG quality 75: close to, not equal to, CIFAR)."""
    from PIL import Image

    path = data_root(root, "CIFAR-10 JPEG pack", JPEG_HOWTO)
    if not path.is_file():
        raise DatasetError(f"CIFAR-10 JPEG pack: {path} does not exist; expected {JPEG_HOWTO}")
    blob, offsets, labels, split = read_npz(path, ("jpeg", "offsets", "label", "split"), "CIFAR-10 JPEG pack",
                                            JPEG_HOWTO)
    _check_pack(path, blob, offsets, labels, split)
    want = np.arange(len(labels))
    train_idx, test_idx = want[split == 0], want[split == 1]
    if subset:
        train_idx = train_idx[np.random.default_rng(0).permutation(len(train_idx))[:subset]]
    images = np.empty((len(labels), 32, 32, 3), np.uint8)
    for i in np.concatenate([train_idx, test_idx]):
        try:
            images[i] = np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:   # not a JPEG, or not 32x32 RGB
            raise DatasetError(f"CIFAR-10 JPEG pack: {path}: image {i} cannot be decoded as a 32x32 image "
                               f"({type(e).__name__}); expected {JPEG_HOWTO}") from None
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    y = torch.from_numpy(labels.astype(np.int64))
    return _bundle(x[train_idx].contiguous(), y[train_idx], x[test_idx].contiguous(), y[test_idx], 10,
                   augment, autoaugment, cutout)


def _check_pack(path, blob, offsets, labels, split) -> None:
    """Array shapes and offsets that slice ``blob`` into N non-empty pieces, in order."""
    n = len(labels)
    ok = (blob.ndim == 1 and blob.dtype == np.uint8 and offsets.ndim == 1 and len(offsets) == n + 1
          and np.issubdtype(offsets.dtype, np.integer) and labels.ndim == 1 and split.shape == (n,)
          and np.issubdtype(labels.dtype, np.integer) and bool(np.isin(split, (0, 1)).all()))
    if ok:
        ok = offsets[0] >= 0 and offsets[-1] <= len(blob) and bool((np.diff(offsets) > 0).all())
    if not ok:
        raise DatasetError(f"CIFAR-10 JPEG pack: {path} has inconsistent arrays (offsets must slice jpeg into "
                           f"one piece per label, split must be 0 or 1); expected {JPEG_HOWTO}")


def _image(path: str):
    """torchvision's image loader; a file it cannot decode is a one-line ``DatasetError``."""
    from torchvision.datasets.folder import default_loader

    try:
        return default_loader(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot decode the image {path} ({type(e).__name__})") from None


@register_dataset("imagenet", num_classes=1000, input_shape=(3, 224, 224))
def imagenet(root: str | None = None, augment: bool = True) -> DataBundle:
    """An image folder with train/ and val/ (one subfolder per class)."""
    from torchvision.datasets import ImageFolder

    howto = "a folder with train/<class>/*.JPEG and val/<class>/*.JPEG (the standard ImageNet layout)"
    path = data_root(root, "ImageNet", howto)
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        raise DatasetError(f"ImageNet: {path} has no train/ and val/ folders; expected {howto}")
    mean, std = IMAGENET_STATS
    tail = [T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)]
    train_tf = T.Compose(([T.RandomResizedCrop(224), T.RandomHorizontalFlip()] if augment
                          else [T.Resize(256), T.CenterCrop(224)]) + tail)
    test_tf = T.Compose([T.Resize(256), T.CenterCrop(224)] + tail)
    try:
        tr, te = (ImageFolder(str(path / "train"), train_tf, loader=_image),
                  ImageFolder(str(path / "val"), test_tf, loader=_image))
    except (FileNotFoundError, RuntimeError) as e:
        raise DatasetError(f"ImageNet: cannot read {path} ({e}); expected {howto}") from None
    if tr.classes != te.classes:
        raise DatasetError(f"ImageNet: {path}: train/ and val/ have other class folders "
                           f"({len(tr.classes)} vs {len(te.classes)})")
    return DataBundle(tr, te, num_classes=len(tr.classes), input_shape=(3, 224, 224))
