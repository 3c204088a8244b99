"""scikit-learn's digits: 1,797 real 8x8 handwritten digits shipped inside the scikit-learn wheel."""
from __future__ import annotations

import torch

from ..errors import require
from .loader import TensorPairs
from .registry import DataBundle, register_dataset


@register_dataset("digits", num_classes=10, input_shape=(1, 8, 8))
def digits(root: str | None = None, test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """Seeded stratified 80/20 split; pixels scaled to [0, 1]; shape (1, 8, 8). ``root`` is unused."""
    if not 0.0 < test_fraction < 1.0:               # `not` also catches NaN
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= split_seed < 2**32:
        raise ValueError(f"split_seed must be in [0, 2**32), got {split_seed}")
    sklearn_datasets = require("sklearn.datasets", "digits", "the digits dataset")
    split = require("sklearn.model_selection", "digits", "the digits dataset").train_test_split
    x, y = sklearn_datasets.load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = split(x, y, test_size=test_fraction, random_state=split_seed,
                                              stratify=y)
    to_x = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0  # noqa: E731
    return DataBundle(TensorPairs(to_x(x_tr), torch.tensor(y_tr)),
                      TensorPairs(to_x(x_te), torch.tensor(y_te)),
                      num_classes=10, input_shape=(1, 8, 8))
