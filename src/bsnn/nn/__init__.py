"""Building blocks: binary layers, binarizers, neurons, trace routing, step-mode containers, AGMM,
per-step BatchNorm."""
from .batchnorm import StepBatchNorm, per_step_batchnorm
from .binarize import Binarizer, ScaledSign, SignSTE, sign_ste
from .binary import (
    BinaryConv2d,
    BinaryLinear,
    BinaryParameter,
    LatentBinaryConv2d,
    LatentBinaryLinear,
    binary_parameters,
    is_binary,
    is_latent_binary,
    latent_binary_parameters,
    real_parameters,
    sign_,
)
from .modulation import AGMM
from .container import SpikingSequential, fold, set_step_mode
from .neuron import OnlineLIFNode, multistep_lif
from .pool import AvgPool2d
from .trace import TraceRouted, conv2d_with_trace, linear_with_trace

__all__ = [
    "Binarizer", "ScaledSign", "SignSTE", "sign_ste", "AGMM", "StepBatchNorm", "per_step_batchnorm",
    "BinaryConv2d", "BinaryLinear", "BinaryParameter", "LatentBinaryConv2d", "LatentBinaryLinear",
    "binary_parameters", "latent_binary_parameters", "real_parameters", "is_binary", "is_latent_binary",
    "sign_", "AvgPool2d", "SpikingSequential", "fold", "set_step_mode", "OnlineLIFNode", "multistep_lif",
    "TraceRouted", "conv2d_with_trace", "linear_with_trace",
]
