"""Datasets (registry) and loaders. Every dataset loads from a local root; nothing is downloaded."""
from . import audio, digits, events, images, mnist, synthetic  # noqa: F401  (registers datasets)
from .loader import TensorPairs, make_loader
from .registry import (
    DataBundle,
    DatasetInfo,
    create,
    dataset_info,
    dataset_signature,
    list_datasets,
    register_dataset,
)

__all__ = ["DataBundle", "DatasetInfo", "TensorPairs", "dataset_info", "create", "dataset_signature", "list_datasets", "make_loader",
           "register_dataset"]
