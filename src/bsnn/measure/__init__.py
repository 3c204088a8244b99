"""Measurements: parameter counts and bits, memory accounting, the self-ensemble view of an SNN."""
from .ensemble import EnsembleReport, ensemble
from .memory import SavedTensorMeter, peak_rss_bytes, persistent_bytes
from .params import ParameterCount, count_parameters

__all__ = ["ParameterCount", "count_parameters", "SavedTensorMeter", "peak_rss_bytes", "persistent_bytes",
           "EnsembleReport", "ensemble"]
