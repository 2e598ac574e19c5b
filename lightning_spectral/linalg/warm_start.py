"""A Lanczos start vector from a warm start that cannot hide a newcomer."""

from __future__ import annotations

import torch
from torch import Tensor

from ._inner_products import InnerProducts, ShardSum

__all__ = ["guarded_start"]


def guarded_start(
    warm: Tensor, generator: torch.Generator | None = None, *, shard_sum: ShardSum | None = None
) -> Tensor:
    """``warm/‖warm‖ + g/‖g‖`` with ``g`` Gaussian from ``generator`` (``None``: global RNG), in ``warm``'s
    dtype and device; ``g/‖g‖`` alone when ``warm`` is zero.

    Args:
        warm: the warm start (e.g. the previous top eigenvector), any shape; with ``shard_sum``, this process's
            shard of a vector sharded over processes (the norms are then the whole vectors', see
            :func:`~lightning_spectral.linalg.lanczos`).
        generator: source of ``g``; ``None`` uses the global torch RNG.
        shard_sum: ``None`` (whole vectors) or the all-reduce sum of partial inner products.

    Returns:
        The start vector, of ``warm``'s shape, dtype and device.

    Example:
        >>> import torch
        >>> v = guarded_start(torch.ones(4), torch.Generator().manual_seed(0))
        >>> v.shape, bool(v.norm() > 0)
        (torch.Size([4]), True)
    """
    inner = InnerProducts(shard_sum)
    g = torch.randn(warm.shape, dtype=warm.dtype, device=warm.device, generator=generator)
    start = g / (g.norm() if shard_sum is None else inner.norm(g))
    norm = warm.norm() if shard_sum is None else inner.norm(warm)
    return start + warm / norm if float(norm) > 0 else start
