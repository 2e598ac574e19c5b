"""A Lanczos start vector from a warm start that cannot hide a newcomer."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["guarded_start"]


def guarded_start(warm: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``warm/‖warm‖ + g/‖g‖`` with ``g`` Gaussian from ``generator`` (``None``: global RNG), in ``warm``'s
    dtype and device; ``g/‖g‖`` alone when ``warm`` is zero.

    Args:
        warm: the warm start (e.g. the previous top eigenvector), any shape.
        generator: source of ``g``; ``None`` uses the global torch RNG.

    Returns:
        The start vector, of ``warm``'s shape, dtype and device.

    Example:
        >>> import torch
        >>> v = guarded_start(torch.ones(4), torch.Generator().manual_seed(0))
        >>> v.shape, bool(v.norm() > 0)
        (torch.Size([4]), True)
    """
    g = torch.randn(warm.shape, dtype=warm.dtype, device=warm.device, generator=generator)
    start = g / g.norm()
    norm = warm.norm()
    return start + warm / norm if float(norm) > 0 else start
