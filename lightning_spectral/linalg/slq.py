"""Spectral density by stochastic Lanczos quadrature (Golub & Meurant; Ubaru, Chen & Saad 2017; Ghorbani,
Krishnan & Xiao 2019).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_int, resolve_dtype_device

from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec
from .lanczos import _lanczos_tridiagonal, small_eigh
from .operator import LinearOperator, resolve_operator
from .probes import rademacher
from .results import SpectralDensity

__all__ = ["gaussian_smoothed_density", "slq_density"]


def slq_density(
    matvec: Matvec | LinearOperator | Tensor,
    dim: int | None = None,
    *,
    num_probes: int = 4,
    num_steps: int = 30,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    probes: Tensor | None = None,
    shard_sum: ShardSum | None = None,
) -> SpectralDensity:
    r"""Stochastic Lanczos quadrature estimate of the spectral density of ``v ↦ matvec(v)``.

    Each probe ``z`` (normalized) runs ``m`` Lanczos steps; the eigenpairs ``(θ_i, s_i)`` of the tridiagonal
    ``T_m`` give the nodes and weights of a Gauss quadrature of the probe's spectral measure:

    .. math::

        \phi(t) \approx \frac{1}{n_{\text{probes}}} \sum_{z} \sum_{i=1}^{m} (s_i)_1^2 \, \delta(t - \theta_i).


    Args:
        matvec: ``v ↦ A v`` for a symmetric ``A`` on 1-D tensors of length ``dim``: a function, a
            :class:`~lightning_spectral.linalg.LinearOperator` or a dense matrix.
        dim: size of ``A`` (``>= 1``); required for a function, read from an operator or matrix.
        num_probes: number of Rademacher probes (``>= 1``).
        num_steps: Lanczos steps per probe (``>= 1``, clamped to ``dim``); nodes per probe.
        dtype: working dtype (default ``torch.get_default_dtype()``; ``probes.dtype`` if given).
        device: working device (default CPU; ``probes.device`` if given).
        generator: source of the probes and of restart vectors; ``None`` uses the global torch RNG.
        probes: optional ``(num_probes, dim)`` non-zero probe vectors to use instead of Rademacher ones
            (each is normalized).
        shard_sum: for vectors sharded over processes, the all-reduce sum of partial inner products (see
            :func:`~lightning_spectral.linalg.lanczos`): ``dim`` and the probes are then this process's shard.

    Returns:
        :class:`SpectralDensity` with ``nodes`` and ``weights`` of shape ``(num_probes, min(num_steps, dim))``.
        Uses ``num_probes · min(num_steps, dim)`` products.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.linspace(-1.0, 1.0, 100, dtype=torch.float64))
        >>> density = slq_density(lambda v: A @ v, dim=100, num_probes=2, num_steps=10, dtype=torch.float64,
        ...                       generator=torch.Generator().manual_seed(0))
        >>> density.nodes.shape, round(float(density.weights.sum()), 12)
        (torch.Size([2, 10]), 1.0)
    """
    matvec, dim, dtype, device = resolve_operator(
        matvec, dim, dtype, device, allow_empty=shard_sum is not None
    )
    inner = InnerProducts(shard_sum)
    check_int("num_probes", num_probes, 1)
    check_int("num_steps", num_steps, 1)
    if probes is None:
        dtype, device = resolve_dtype_device(dtype, device)
        probes = rademacher((num_probes, dim), dtype=dtype, device=device, generator=generator)
    else:
        if (
            not isinstance(probes, Tensor)
            or probes.shape != (num_probes, dim)
            or not probes.is_floating_point()
        ):
            got = tuple(probes.shape) if isinstance(probes, Tensor) else type(probes).__name__
            raise ValueError(f"`probes` must be a floating tensor of shape ({num_probes}, {dim}), got {got}.")
        if dtype is not None and dtype != probes.dtype:
            raise ValueError(f"`dtype` ({dtype}) conflicts with `probes.dtype` ({probes.dtype}).")
        if device is not None and torch.device(device) != probes.device:
            raise ValueError(f"`device` ({device}) conflicts with `probes.device` ({probes.device}).")
        norms = (
            inner.total(probes.square().sum(dim=1))
            if inner.sharded
            else torch.linalg.vector_norm(probes, dim=1)
        )
        if not bool((norms > 0).all()) or not bool(probes.isfinite().all()):
            raise ValueError("`probes` must be finite and every probe must be non-zero.")
        probes = probes.detach()

    all_nodes, all_weights = [], []
    for probe in probes:
        state = _lanczos_tridiagonal(matvec, probe, num_steps, generator=generator, inner=inner)
        theta, S = (torch.from_numpy(x) for x in small_eigh(state.tridiagonal()))
        all_nodes.append(theta)
        all_weights.append(S[0] ** 2 / num_probes)
    nodes = torch.stack(all_nodes).to(dtype=probes.dtype, device=probes.device)
    weights = torch.stack(all_weights).to(dtype=probes.dtype, device=probes.device)
    return SpectralDensity(nodes=nodes, weights=weights)


def gaussian_smoothed_density(density: SpectralDensity, grid: Tensor, sigma: float) -> Tensor:
    """``density`` convolved with a Gaussian of width ``sigma`` and evaluated on ``grid`` (for plotting).

    Same as :meth:`SpectralDensity.smoothed`: ``φ_σ(t) = Σ w · exp(−(t − θ)²/(2σ²)) / (σ√(2π))``.

    Args:
        density: the point masses (:class:`SpectralDensity`).
        grid: 1-D tensor of the points ``t`` at which to evaluate.
        sigma: the Gaussian's standard deviation (``> 0``).

    Returns:
        1-D tensor ``φ_σ(grid)``, integrating to the total weight (one for :func:`slq_density`'s output).

    Example:
        >>> import torch
        >>> density = SpectralDensity(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        >>> grid = torch.linspace(-1.0, 1.0, 2001)
        >>> round(float(gaussian_smoothed_density(density, grid, 0.1).sum() * (grid[1] - grid[0])), 4)
        1.0
    """
    if not isinstance(density, SpectralDensity):
        raise TypeError(f"`density` must be a SpectralDensity, got {type(density).__name__}.")
    return density.smoothed(grid, sigma)
