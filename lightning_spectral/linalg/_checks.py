"""Argument checks shared by the routines of :mod:`lightning_spectral.linalg`."""

from __future__ import annotations

import numbers

import torch


class NonFiniteError(ValueError):
    """An input or an intermediate result (a matrix-vector product, a weight, a loss) is NaN or infinite.

    A ``ValueError`` subclass, so existing handlers keep working; the callbacks catch it separately: they log
    the affected metrics as NaN and let training go on (a NaN is a finding, not a failure of the monitor).
    """


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an ``int`` after checking that it is an integer (not a bool) and ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def resolve_dtype_device(
    dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    """``dtype`` (default ``torch.get_default_dtype()``, must be floating point) and ``device`` (default CPU)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"`dtype` must be a real floating-point torch.dtype, got {dtype}.")
    return dtype, torch.device("cpu") if device is None else torch.device(device)
