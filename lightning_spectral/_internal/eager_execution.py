"""Measurements run code compiled by ``torch.compile`` eagerly: exact, no double-backward error, no recompilation.

Example::

    >>> import torch
    >>> double = torch.compile(lambda x: 2 * x, backend="eager")
    >>> with compiled_code_runs_eagerly():
    ...     double(torch.ones(2))
    tensor([2., 2.])
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

__all__ = ["compiled_code_runs_eagerly", "eager_stance_available"]


def eager_stance_available() -> bool:
    """Whether this PyTorch has ``torch.compiler.set_stance`` (2.6 and later)."""
    return callable(getattr(getattr(torch, "compiler", None), "set_stance", None))


@contextlib.contextmanager
def compiled_code_runs_eagerly() -> Iterator[None]:
    """Run code compiled by ``torch.compile`` eagerly in the body (see the docs' implementation notes); restore the stance on exit."""
    if "torch._dynamo" not in sys.modules or not eager_stance_available():  # nothing compiled / no stance
        yield
        return
    with torch.compiler.set_stance("force_eager"):
        yield
