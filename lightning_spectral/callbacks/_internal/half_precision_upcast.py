"""Models stored in float16 / bfloat16 are measured in float32.

Example::

    >>> import torch
    >>> layer = torch.nn.Linear(2, 2).bfloat16()
    >>> with float32_half_precision_tensors(layer) as upcast:
    ...     upcast, layer.weight.dtype
    (True, torch.float32)
    >>> layer.weight.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn

HALF_DTYPES = (torch.float16, torch.bfloat16)

__all__ = ["HALF_DTYPES", "float32_batch", "float32_half_precision_tensors"]


@contextlib.contextmanager
def float32_half_precision_tensors(module: nn.Module) -> Iterator[bool]:
    """Float32 copies of the module's float16 / bfloat16 parameters and buffers inside the body (yields whether
    there were any); the original tensors' storage is restored on exit.
    """
    swapped: list[tuple[Tensor, Tensor]] = []
    try:
        with torch.no_grad():
            for tensor in itertools.chain(module.parameters(), module.buffers()):
                if tensor.dtype in HALF_DTYPES:
                    original = tensor.data
                    tensor.data = original.float()
                    swapped.append((tensor, original))
        yield bool(swapped)
    finally:
        for tensor, original in swapped:
            tensor.data = original


def _to_float32(tensor: Tensor) -> Tensor:
    return tensor.float() if tensor.dtype in HALF_DTYPES else tensor


def float32_batch(batch: Any) -> Any:
    """``batch`` with its float16 / bfloat16 tensors cast to float32 (any nesting of sequences and mappings)."""
    return apply_to_collection(batch, Tensor, _to_float32)
