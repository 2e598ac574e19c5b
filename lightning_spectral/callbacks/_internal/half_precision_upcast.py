"""Models stored in float16 / bfloat16 are measured in float32.

Under ``precision="bf16-true"`` or ``"16-true"`` Lightning casts the whole model (and every floating input) to
the half dtype. A Hessian or NTK measured in that dtype carries its rounding through every product and
through Lanczos itself (bfloat16 keeps 8 bits of mantissa). Measured (``python -m
benchmarks.half_precision_effect``, a 26k-parameter MLP): in bfloat16 arithmetic the top-3 Hessian
eigenvalues were off by 2.9e-3, 4.0e-2 and 1.3e-1 relative and the NTK λ_max by 3.2e-2 from float32
measurements of the same bfloat16 model, while rounding the model and inputs to bfloat16 had moved them by at
most 2.5e-4 (float16 arithmetic: up to 3.6e-3, against 3.1e-5 from rounding).
The spectrum of interest is that of the model as stored; the arithmetic is what must not add error.

:func:`float32_half_precision_tensors` gives every float16 / bfloat16 parameter and buffer of the module a
float32 copy for the body (``tensor.data`` swapped, so parameter identities, optimizer state and hooks are
untouched) and puts the original storage back on exit, bit for bit (nothing is converted back).
:func:`float32_batch` casts the half-precision tensors of a batch. The cost is the float32 copies: twice the
half-precision parameters' memory while a measurement runs, and float32 activations in it.

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
    there were any); the original tensors' storage is restored on exit."""
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
