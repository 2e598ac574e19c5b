"""A Lanczos start vector from a warm start that cannot hide a newcomer.

Warm-starting Lanczos from the previous top eigenvector(s) saves products while the spectrum drifts, but is
unsafe when eigenvalues *cross*: if a direction that was low in the spectrum rises above the old top, the old
top vector has almost no component along it, the Krylov space converges to the old eigenpair within a few
steps (a true eigenpair of the new operator, small residual, passes the convergence test) and the new, larger
eigenvalue is never seen. Measured: a 2000-dim operator whose third eigenvalue rose from 5 to 12 above the
old top 10, started from the old top vector (perturbed by 1e-2): Lanczos reported 10 in 3 products, 5 seeds
out of 5. That happens in training (sharpness crossings at the edge of stability, new directions growing).

:func:`guarded_start` mixes the warm vector with an independent Gaussian vector of equal norm. The Gaussian
share gives every eigenvector the component a cold start would give it, so the convergence test cannot pass
before the Krylov space has seen the whole spectrum, and the warm share still shortens the run. Same
operator: the crossing found 5 out of 5 seeds (8–10 products, cold 7–10); a slow drift (10 → 10.2) took 5–7
products against 8–10 cold. A Gaussian share of 0.1 or 0.3 still missed the crossing for 1 seed in 5.

Example::

    >>> import torch
    >>> v = guarded_start(torch.ones(4), torch.Generator().manual_seed(0))
    >>> v.shape, bool(v.norm() > 0)
    (torch.Size([4]), True)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._inner_products import InnerProducts, ShardSum

__all__ = ["guarded_start"]


def guarded_start(
    warm: Tensor, generator: torch.Generator | None = None, *, shard_sum: ShardSum | None = None
) -> Tensor:
    """``warm/‖warm‖ + g/‖g‖`` with ``g`` Gaussian from ``generator`` (``None``: global RNG), in ``warm``'s
    dtype and device; ``g/‖g‖`` alone when ``warm`` is zero. ``shard_sum``: ``warm`` is this process's shard
    of a vector sharded over processes, the norms are the whole vectors' (see
    :func:`~lightning_spectral.linalg.lanczos`)."""
    inner = InnerProducts(shard_sum)
    g = torch.randn(warm.shape, dtype=warm.dtype, device=warm.device, generator=generator)
    start = g / (g.norm() if shard_sum is None else inner.norm(g))
    norm = warm.norm() if shard_sum is None else inner.norm(warm)
    return start + warm / norm if float(norm) > 0 else start
