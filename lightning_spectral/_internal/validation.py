"""Argument checks for every layer of the package, with one rule.

A value of the wrong type raises :class:`ArgumentTypeError` (a ``TypeError``); a value of the right type that
is out of range or not among the choices raises ``ValueError``. Every message names the argument (in
backticks) and what is allowed. :class:`ArgumentTypeError` is also a ``ValueError``, because before version 0.2
the constructors raised ``ValueError`` for both: code written against them keeps catching it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")

__all__ = [
    "ArgumentTypeError",
    "NonFiniteError",
    "check_bool",
    "check_callable",
    "check_choice",
    "check_int",
    "check_non_negative_finite",
    "check_open_unit_interval",
    "check_positive_finite",
    "resolve_dtype_device",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. A ``TypeError``; also a ``ValueError`` (what constructors raised
    before version 0.2), so existing handlers of either keep working.
    """


class NonFiniteError(ValueError):
    """An input or an intermediate result (a matrix-vector product, a weight, a loss) is NaN or infinite.

    A ``ValueError`` subclass, so existing handlers keep working; the callbacks catch it separately: they log
    the affected metrics as NaN and let training go on (a NaN is a finding, not a failure of the monitor).
    """


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(
    name: str, value: Any, minimum: int, *, maximum: int | None = None, optional: bool = False
) -> Any:
    """``value`` as an ``int`` after checking it is an integer (not a bool) in ``[minimum, maximum]``.

    With ``optional=True`` ``None`` is allowed too (and returned).
    """
    if value is None and optional:
        return None
    kind = "an int or None" if optional else "an int"
    allowed = f">= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if not _is_int(value):
        detail = f"{kind} ({allowed})" if maximum is None else allowed + (" or None" if optional else "")
        raise ArgumentTypeError(f"`{name}` must be {detail}, got {value!r} ({type(value).__name__}).")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}.")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` must be ``True`` or ``False``; returns it."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_choice(name: str, value: T, choices: Sequence[Any]) -> T:
    """``value`` must be one of ``choices``; returns it."""
    try:
        allowed = value in choices
    except TypeError:  # an unhashable value against a set or dict of choices
        allowed = False
    if not allowed:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


def check_open_unit_interval(name: str, value: Any) -> float:
    """``value`` must be a real number strictly between 0 and 1 (a fraction or relative tolerance)."""
    if not _is_real(value):
        raise ArgumentTypeError(f"`{name}` must be a float in (0, 1), got {value!r}.")
    if not 0.0 < value < 1.0:
        raise ValueError(f"`{name}` must be a float in (0, 1), got {value!r}.")
    return float(value)


def check_positive_finite(name: str, value: Any) -> float:
    """``value`` must be a positive finite real number; returns it as a ``float``."""
    if not _is_real(value):
        raise ArgumentTypeError(f"`{name}` must be a positive finite number, got {value!r}.")
    if not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
    return float(value)


def check_non_negative_finite(name: str, value: Any) -> float:
    """``value`` must be a finite real number ``>= 0``; returns it as a ``float``."""
    if not _is_real(value):
        raise ArgumentTypeError(f"`{name}` must be a non-negative finite number, got {value!r}.")
    if not 0 <= value < math.inf:
        raise ValueError(f"`{name}` must be a non-negative finite number, got {value!r}.")
    return float(value)


def check_callable(name: str, value: Any) -> None:
    """``value`` must be callable or ``None``."""
    if value is not None and not callable(value):
        raise ArgumentTypeError(f"`{name}` must be callable or None, got {value!r}.")


def resolve_dtype_device(
    dtype: torch.dtype | None, device: torch.device | str | None
) -> tuple[torch.dtype, torch.device]:
    """``dtype`` (default ``torch.get_default_dtype()``, must be real floating point) and ``device`` (default CPU)."""
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise ArgumentTypeError(f"`dtype` must be a real floating-point torch.dtype, got {dtype!r}.")
    if not dtype.is_floating_point or dtype.is_complex:
        raise ValueError(f"`dtype` must be a real floating-point torch.dtype, got {dtype}.")
    return dtype, torch.device("cpu") if device is None else torch.device(device)
