"""Batch loading for in-memory tensor datasets.

Small datasets (digits, MNIST, N-MNIST frames) live in memory as tensors; indexing a whole batch at
once avoids the per-sample collate of a plain ``DataLoader``. The order of an epoch depends only on
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

__all__ = ["make_loader", "TensorPairs"]


class TensorPairs(Dataset):
    """(x, y) tensors with an optional per-batch transform; indexable by a list of indices."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None):
        from ..errors import DatasetError

        if len(x) != len(y):
            raise DatasetError(f"inputs and labels differ in length: {len(x)} vs {len(y)}")
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DatasetError(f"labels must be one integer per sample, got {y.dtype} of shape {tuple(y.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise DatasetError("inputs hold NaN or inf values (docs/methods.md, 'Non-finite values')")
        self.x, self.y, self.transform = x, y.long(), transform

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx):
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
                num_workers: int = 0, drop_last: bool = False, sampler=None) -> DataLoader:
    """A loader whose shuffle order is a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if isinstance(ds, TensorPairs):
        base = sampler or (RandomSampler(ds, generator=g) if shuffle else SequentialSampler(ds))
        return DataLoader(ds, sampler=BatchSampler(base, batch_size, drop_last), batch_size=None,
                          num_workers=num_workers)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      generator=g, num_workers=num_workers, drop_last=drop_last,
                      persistent_workers=False, pin_memory=torch.cuda.is_available())
