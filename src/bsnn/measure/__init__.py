"""Measurements: parameter counts and bits, memory accounting."""
from .memory import SavedTensorMeter, peak_rss_bytes, persistent_bytes
from .params import ParameterCount, count_parameters

__all__ = ["ParameterCount", "count_parameters", "SavedTensorMeter", "peak_rss_bytes", "persistent_bytes"]
