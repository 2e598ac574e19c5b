"""Spectral density by stochastic Lanczos quadrature (Golub & Meurant; Ubaru, Chen & Saad 2017; Ghorbani,
Krishnan & Xiao 2019).

The spectral density of a symmetric ``A ∈ R^{dim×dim}`` with eigenpairs ``(λ_l, u_l)`` is
``φ(t) = (1/dim) Σ_l δ(t − λ_l)``. For a probe ``v`` with ``‖v‖ = 1`` the measure
``μ_v = Σ_l (u_lᵀ v)² δ(t − λ_l)`` has ``E[μ_v] = φ`` when ``v = z/√dim`` with ``z`` Rademacher. ``m`` Lanczos
steps from ``v`` give ``T_m = S diag(θ) Sᵀ``, and the Gauss quadrature rule with nodes ``θ_i`` and weights
``S_{1,i}²`` integrates every polynomial of degree ``<= 2m − 1`` exactly against ``μ_v``::

    Σ_i S_{1,i}² θ_i^p = e_1ᵀ T_m^p e_1 = vᵀ A^p v,   p = 0, …, 2m − 1.

Averaging over ``num_probes`` probes gives ``SpectralDensity(nodes, weights)`` with
``weights = S_{1,i}² / num_probes`` (all weights sum to one).

The Lanczos steps are those of :func:`~lightning_spectral.linalg.lanczos` (full reorthogonalisation). If a
probe's Krylov space becomes invariant after ``j < m`` steps (at most ``j`` distinct eigenvalues are seen by
``v``), the quadrature is already exact for every polynomial; the run continues from a random orthogonal
vector so that every probe has exactly ``m = min(num_steps, dim)`` nodes, and those extra nodes carry zero
weight. ``num_steps`` above ``dim`` is clamped to ``dim``.

Probes. Unless ``probes`` is given, the probes are ``rademacher((num_probes, dim))`` drawn first from
``generator``, so the same seed reproduces them.

Example::

    >>> import torch
    >>> A = torch.diag(torch.linspace(-1.0, 1.0, 100, dtype=torch.float64))
    >>> density = slq_density(lambda v: A @ v, dim=100, num_probes=2, num_steps=10, dtype=torch.float64,
    ...                       generator=torch.Generator().manual_seed(0))
    >>> density.nodes.shape, round(float(density.weights.sum()), 12)
    (torch.Size([2, 10]), 1.0)
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_int, resolve_dtype_device
from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec, check_matvec
from .lanczos import _lanczos_tridiagonal, small_eigh
from .probes import rademacher
from .results import SpectralDensity

__all__ = ["gaussian_smoothed_density", "slq_density"]


def slq_density(
    matvec: Matvec,
    dim: int,
    *,
    num_probes: int = 4,
    num_steps: int = 30,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    probes: Tensor | None = None,
    shard_sum: ShardSum | None = None,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature estimate of the spectral density of ``v ↦ matvec(v)``.

    Args:
        matvec: ``v ↦ A v`` for a symmetric ``A`` on 1-D tensors of length ``dim``.
        dim: size of ``A`` (``>= 1``).
        num_probes: number of Rademacher probes (``>= 1``).
        num_steps: Lanczos steps per probe (``>= 1``, clamped to ``dim``); nodes per probe.
        dtype: working dtype (default ``torch.get_default_dtype()``; ``probes.dtype`` if given).
        device: working device (default CPU; ``probes.device`` if given).
        generator: source of the probes and of restart vectors; ``None`` uses the global torch RNG.
        probes: optional ``(num_probes, dim)`` non-zero probe vectors to use instead of Rademacher ones
            (each is normalised).
        shard_sum: for vectors sharded over processes, the all-reduce sum of partial inner products (see
            :func:`~lightning_spectral.linalg.lanczos`): ``dim`` and the probes are then this process's shard.

    Returns:
        :class:`SpectralDensity` with ``nodes`` and ``weights`` of shape ``(num_probes, min(num_steps, dim))``.
        Uses ``num_probes · min(num_steps, dim)`` products.
    """
    check_matvec(matvec)
    inner = InnerProducts(shard_sum)
    check_int("dim", dim, 0 if inner.sharded else 1)
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
    """
    if not isinstance(density, SpectralDensity):
        raise TypeError(f"`density` must be a SpectralDensity, got {type(density).__name__}.")
    return density.smoothed(grid, sigma)
