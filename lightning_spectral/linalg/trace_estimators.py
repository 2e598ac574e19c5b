"""Stochastic trace estimation from matrix-vector products: Hutchinson and Hutch++.

Hutchinson (1990). For Rademacher probes ``z_1, …, z_n`` (``E[z zᵀ] = I``)::

    tr(A) ≈ (1/n) Σ_i z_iᵀ A z_i,     standard error = s / √n,

with ``s`` the sample standard deviation of the ``z_iᵀ A z_i``. The estimate is unbiased; its variance is
``2(‖A‖_F² − Σ_i A_ii²)/n`` for symmetric ``A``.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021). Spend a third of the budget ``m`` on a sketch of the top of
the spectrum, a third on its exact trace and a third on Hutchinson for the rest::

    S: dim×s Gaussian (s = ⌊m/3⌋),  Q = qr(A S),
    tr(A) ≈ tr(Qᵀ A Q) + (1/h) Σ_i g_iᵀ (I − QQᵀ) A (I − QQᵀ) g_i,   h = m − 2s Rademacher probes g_i.

The projection removes the large eigenvalues that dominate Hutchinson's variance: for PSD ``A`` the relative
error falls from ``O(1/√m)`` (Hutchinson) to ``O(1/m)``. The estimator is unbiased for every ``Q``, because
``tr(QᵀAQ) + tr((I − QQᵀ)A(I − QQᵀ)) = tr(A)`` and the probes ``g_i`` are independent of ``Q``. The reported ``std_error`` is the *conditional* standard error given
``Q`` (the sample standard deviation of the Hutchinson part over ``√h``); ``tr(QᵀAQ)`` is computed exactly.

Budgets that cover the space. A trace is exact after ``dim`` products with the basis vectors ``e_i``.
``hutchpp_trace`` uses that (``std_error = 0``) whenever ``num_matvecs >= dim``, which includes every case
where the sketch alone (``⌊m/3⌋ >= dim``) would span the space. ``hutchinson_trace`` stays the plain
stochastic estimator for every budget.

``matvec`` maps a 1-D tensor of length ``dim`` to a 1-D tensor of length ``dim`` (same dtype and device). Both
estimators are unbiased for any square matrix; the variance statements above assume a symmetric (for
Hutch++'s bound, PSD) one.

Example::

    >>> import torch
    >>> A = torch.ones(10, 10, dtype=torch.float64)  # tr(A) = 10, rank one
    >>> est = hutchinson_trace(lambda v: A @ v, dim=10, num_matvecs=50, dtype=torch.float64,
    ...                        generator=torch.Generator().manual_seed(0))
    >>> abs(est.estimate - 10.0) < 3 * est.std_error
    True
    >>> est = hutchpp_trace(lambda v: A @ v, dim=10, num_matvecs=9, dtype=torch.float64,
    ...                     generator=torch.Generator().manual_seed(0))
    >>> round(est.estimate, 9), est.std_error < 1e-12  # the rank-one sketch captures A exactly
    (10.0, True)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check_int, resolve_dtype_device
from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec, apply_matvec, check_matvec
from .probes import rademacher
from .results import TraceEstimate

__all__ = ["hutchinson_trace", "hutchpp_trace", "mean_and_std_error"]


def mean_and_std_error(samples: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``s/√n`` (``s`` with Bessel's correction) of a 1-D tensor.

    With a single sample the standard error is unknown and returned as ``nan``.

    Example::

        >>> import torch
        >>> mean_and_std_error(torch.tensor([1.0, 3.0]))
        (2.0, 1.0)
    """
    if not isinstance(samples, Tensor) or samples.ndim != 1 or samples.numel() < 1:
        raise ValueError("`samples` must be a non-empty 1-D tensor.")
    values = samples.detach().to(torch.float64)
    mean = float(values.mean())
    if values.numel() < 2:
        return mean, math.nan
    return mean, float(values.std(correction=1)) / math.sqrt(values.numel())


def _check_args(
    matvec: Matvec,
    dim: int,
    num_matvecs: int,
    minimum: int,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    inner: InnerProducts,
) -> tuple[torch.dtype, torch.device]:
    check_matvec(matvec)
    check_int("dim", dim, 0 if inner.sharded else 1)
    check_int("num_matvecs", num_matvecs, minimum)
    return resolve_dtype_device(dtype, device)


def _basis_vector(dim: int, i: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    e = torch.zeros(dim, dtype=dtype, device=device)
    e[i] = 1.0
    return e


def _quadratic_form(matvec: Matvec, v: Tensor, inner: InnerProducts) -> Tensor:
    return inner.dot(v, apply_matvec(matvec, v))


def hutchinson_trace(
    matvec: Matvec,
    dim: int,
    num_matvecs: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of ``tr(A)`` from ``num_matvecs`` Rademacher probes (see module docstring).

    Args:
        matvec: ``v ↦ A v`` on 1-D tensors of length ``dim``.
        dim: size of ``A`` (``>= 1``).
        num_matvecs: number of probes (``>= 1``; with one probe ``std_error`` is ``nan``).
        dtype: probe dtype (default ``torch.get_default_dtype()``).
        device: probe device (default CPU).
        generator: source of the probes; ``None`` uses the global torch RNG. Must live on ``device``.
        shard_sum: for vectors sharded over processes, the all-reduce sum of partial inner products
            (:func:`~lightning_spectral.linalg.lanczos`); ``dim`` is then this process's shard length, and each
            process must draw its probes from a generator of its own.

    Returns:
        :class:`TraceEstimate` ``(estimate, std_error = s/√n, num_matvecs)``.
    """
    inner = InnerProducts(shard_sum)
    dtype, device = _check_args(matvec, dim, num_matvecs, 1, dtype, device, inner)
    samples = torch.stack(
        [
            _quadratic_form(matvec, rademacher(dim, dtype=dtype, device=device, generator=generator), inner)
            for _ in range(num_matvecs)
        ]
    )
    estimate, std_error = mean_and_std_error(samples)
    return TraceEstimate(estimate, std_error, int(num_matvecs))


def hutchpp_trace(
    matvec: Matvec,
    dim: int,
    num_matvecs: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> TraceEstimate:
    """Hutch++ estimate of ``tr(A)`` for symmetric ``A`` with a budget of ``num_matvecs`` products.

    The budget is split as ``s = ⌊m/3⌋`` sketch columns, ``s`` products for ``tr(QᵀAQ)`` and ``m − 2s``
    Hutchinson probes on the deflated operator (see module docstring). If ``num_matvecs >= dim`` the trace
    is computed exactly from ``dim`` products with the basis vectors and ``std_error`` is ``0.0``.

    Args:
        matvec: ``v ↦ A v`` on 1-D tensors of length ``dim``.
        dim: size of ``A`` (``>= 1``).
        num_matvecs: product budget (``>= 3``); with ``m − 2s = 1`` Hutchinson probe ``std_error`` is ``nan``.
        dtype: probe dtype (default ``torch.get_default_dtype()``).
        device: probe device (default CPU).
        generator: source of the sketch and probes; ``None`` uses the global torch RNG.
        shard_sum: for vectors sharded over processes, the all-reduce sum of partial inner products
            (:func:`~lightning_spectral.linalg.lanczos`; ``dim`` is this process's shard length, each process
            draws from a generator of its own). The sketch is orthonormalised by Gram-Schmidt over the shards,
            and the exact shortcut for ``num_matvecs >= dim`` is not taken (the estimate stays stochastic).

    Returns:
        :class:`TraceEstimate` whose ``std_error`` is the standard error of the Hutchinson part given ``Q``
        and whose ``num_matvecs`` is the number of products actually made.
    """
    inner = InnerProducts(shard_sum)
    dtype, device = _check_args(matvec, dim, num_matvecs, 3, dtype, device, inner)
    if not inner.sharded and num_matvecs >= dim:
        diagonal = torch.stack(
            [apply_matvec(matvec, _basis_vector(dim, i, dtype, device))[i] for i in range(dim)]
        )
        return TraceEstimate(float(diagonal.to(torch.float64).sum()), 0.0, int(dim))

    sketch_size = num_matvecs // 3
    num_probes = num_matvecs - 2 * sketch_size
    # A Gaussian sketch: a Rademacher one can be annihilated exactly by a structured range (for the all-ones
    # matrix every ±1 column summing to zero, 25% of them in dimension 10), which leaves the dominant part of
    # A to the few Hutchinson probes; a Gaussian sketch loses no direction with probability one.
    S = torch.randn((sketch_size, dim), dtype=dtype, device=device, generator=generator)
    AS = torch.stack([apply_matvec(matvec, s) for s in S], dim=1)  # (dim, sketch_size)
    Q = inner.orthonormalize(AS)
    AQ = torch.stack([apply_matvec(matvec, Q[:, i].contiguous()) for i in range(sketch_size)], dim=1)
    top = float(inner.total((Q * AQ).sum()).to(torch.float64))
    samples = []
    for _ in range(num_probes):
        g = rademacher(dim, dtype=dtype, device=device, generator=generator)
        g = g - Q @ inner.total(Q.mT @ g)
        samples.append(_quadratic_form(matvec, g, inner))
    rest, std_error = mean_and_std_error(torch.stack(samples))
    return TraceEstimate(top + rest, std_error, int(2 * sketch_size + num_probes))
