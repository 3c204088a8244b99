"""Measurements: parameter counts and bits, memory accounting."""
from .params import ParameterCount, count_parameters

__all__ = ["ParameterCount", "count_parameters"]
