"""Generated data for checks that need no files.

``early_cue``: a temporal task whose information sits in the first time steps only, as in spoken words
(the word, then near-silence) or event streams that end quietly. Each class has a fixed random 8x8
pattern; a sample shows its class pattern plus noise in the first ``cue_steps`` frames and then a
constant ``silence`` level with faint noise (as a log-mel spectrogram of silence, normalised, is a
constant), so the input's statistics change across time steps (the case where BatchNorm statistics
shared by all steps fit none of them: ``model.bn_stats``).
"""
from __future__ import annotations

import torch

from .loader import TensorPairs
from .registry import DataBundle, register_dataset

__all__ = ["early_cue"]


@register_dataset("early_cue", num_classes=10, input_shape=(1, 8, 8), temporal=True)
def early_cue(root: str | None = None, time_steps: int = 4, cue_steps: int = 1, samples: int = 3000,
              noise: float = 0.5, silence: float = -1.0, quiet: float = 0.05, test_fraction: float = 0.2, seed: int = 0) -> DataBundle:
    """``samples`` sequences ``[T, 1, 8, 8]`` of 10 classes (see the module docstring). ``root`` is unused."""
    if not 1 <= cue_steps <= time_steps:
        raise ValueError(f"cue_steps must be in [1, time_steps={time_steps}], got {cue_steps}")
    if samples < 20:
        raise ValueError(f"samples must be >= 20, got {samples}")
    if not (noise >= 0 and quiet >= 0):
        raise ValueError(f"noise and quiet must be >= 0, got {noise}, {quiet}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 1, 8, 8, generator=g)
    y = torch.arange(samples) % 10
    y = y[torch.randperm(samples, generator=g)]
    x = silence + quiet * torch.rand(samples, time_steps, 1, 8, 8, generator=g)
    x[:, :cue_steps] = patterns[y].unsqueeze(1) + noise * torch.rand(samples, cue_steps, 1, 8, 8, generator=g)
    cut = samples - max(10, int(round(test_fraction * samples)))
    return DataBundle(TensorPairs(x[:cut], y[:cut]), TensorPairs(x[cut:], y[cut:]), num_classes=10,
                      input_shape=(1, 8, 8), temporal=True)
