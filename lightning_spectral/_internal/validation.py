"""Argument checks shared by the public constructors: a ``ValueError`` that names the argument and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` must be an ``int`` (not a bool) ``>= minimum``; returns it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return value


def check_bool(name: str, value: Any) -> None:
    """``value`` must be ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")


def check_open_unit_interval(name: str, value: Any) -> None:
    """``value`` must be a float strictly between 0 and 1 (a relative tolerance)."""
    if not (isinstance(value, float) and 0.0 < value < 1.0):
        raise ValueError(f"`{name}` must be a float in (0, 1), got {value!r}.")


def check_positive_finite(name: str, value: Any) -> None:
    """``value`` must be a positive finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")


def check_callable(name: str, value: Any) -> None:
    """``value`` must be callable or ``None``."""
    if value is not None and not callable(value):
        raise ValueError(f"`{name}` must be callable or None, got {value!r}.")
