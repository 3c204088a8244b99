"""Parameter counts and model size with binary weights at 1 bit and everything else at 32 bits."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from ..nn.batchnorm import StepBatchNorm
from ..nn.binarize import Binarizer
from ..nn.binary import REAL_BITS, BinaryParameter

__all__ = ["ParameterCount", "count_parameters", "size_bits"]


def size_bits(binary: int, real: int) -> int:
    """Bits of ``binary`` 1-bit weights and ``real`` 32-bit values (``BinaryParameter.bit_width``)."""
    return binary * BinaryParameter.bit_width + real * REAL_BITS


@dataclass
class ParameterCount:
    """Element counts of a model's parameters and buffers, by how a deployed model stores them."""
    binary: int        # 1-bit weights (exact ±1 or latent, deployed as 1 bit)
    real: int          # 32-bit parameters
    buffers: int       # 32-bit floating buffers (BN running mean/var)
    scales: int = 0    # 32-bit scales a binarizer derives from latent weights (deployed with the signs)
    step_stats: int = 0  # 32-bit values per-step BatchNorm adds when deployed: folded scale and bias
    #                      for every time step after the first (2·C·(T − 1) per StepBatchNorm)

    @property
    def bits(self) -> int:
        """What a deployed model holds: binary weights at 1 bit; real parameters, scales and per-step
        BatchNorm values at 32 bits."""
        return size_bits(self.binary, self.real + self.scales + self.step_stats)

    @property
    def bits_with_buffers(self) -> int:
        """:attr:`bits` plus the floating buffers at 32 bits."""
        return self.bits + size_bits(0, self.buffers)

    @property
    def float32_bits(self) -> int:
        """Size of the same model with every value (per-step BatchNorm ones included) in float32."""
        return size_bits(0, self.binary + self.real + self.step_stats)

    def as_dict(self) -> dict:
        """The counts with ``bits``, ``bits_with_buffers``, ``megabytes`` and ``compression`` (vs float32)."""
        return {**asdict(self), "bits": self.bits, "bits_with_buffers": self.bits_with_buffers,
                "megabytes": self.bits / 8e6, "compression": self.float32_bits / max(self.bits, 1)}


def count_parameters(model: nn.Module) -> ParameterCount:
    """Count the binary (``BinaryParameter``) and real parameters, floating buffers, binarizer scales and
    per-step BatchNorm values of ``model``."""
    binary = sum(p.numel() for p in model.parameters() if isinstance(p, BinaryParameter))
    real = sum(p.numel() for p in model.parameters() if not isinstance(p, BinaryParameter))
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    scales = sum(m.binarizer.scale_count(m.weight) for m in model.modules()
                 if isinstance(getattr(m, "binarizer", None), Binarizer) and isinstance(m.weight, BinaryParameter))
    step_stats = sum(2 * m.num_features * (m.time_steps - 1) for m in model.modules() if isinstance(m, StepBatchNorm))
    return ParameterCount(binary, real, buffers, scales, step_stats)
