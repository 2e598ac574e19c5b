"""Stochastic trace estimation from matrix-vector products: Hutchinson and Hutch++."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_spectral._internal.validation import ArgumentTypeError, check_int, resolve_dtype_device

from ._inner_products import InnerProducts, ShardSum
from ._matvec import Matvec, apply_matvec
from .operator import LinearOperator, resolve_operator
from .probes import rademacher
from .results import TraceEstimate

__all__ = ["hutchinson_trace", "hutchpp_trace", "mean_and_std_error"]


def mean_and_std_error(samples: Tensor) -> tuple[float, float]:
    """Sample mean and its standard error ``s/√n`` (``s`` with Bessel's correction) of a 1-D tensor.

    With a single sample the standard error is unknown and returned as ``nan``.

    Args:
        samples: 1-D tensor of samples.

    Returns:
        ``(mean, std_error)`` as Python floats.

    Raises:
        ValueError: ``samples`` is not a non-empty 1-D tensor.

    Example:
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
    operator: Matvec | LinearOperator | Tensor,
    dim: int | None,
    num_matvecs: int | None,
    minimum: int,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    inner: InnerProducts,
) -> tuple[Matvec, int, int, torch.dtype, torch.device]:
    matvec, dim, dtype, device = resolve_operator(operator, dim, dtype, device, allow_empty=inner.sharded)
    if num_matvecs is None:
        raise ArgumentTypeError("missing the argument `num_matvecs` (the product budget).")
    num_matvecs = check_int("num_matvecs", num_matvecs, minimum)
    return (matvec, dim, num_matvecs, *resolve_dtype_device(dtype, device))


def _basis_vector(dim: int, i: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    e = torch.zeros(dim, dtype=dtype, device=device)
    e[i] = 1.0
    return e


def _quadratic_form(matvec: Matvec, v: Tensor, inner: InnerProducts) -> Tensor:
    return inner.dot(v, apply_matvec(matvec, v))


def hutchinson_trace(
    matvec: Matvec | LinearOperator | Tensor,
    dim: int | None = None,
    num_matvecs: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> TraceEstimate:
    r"""Hutchinson's estimate of ``tr(A)`` from ``num_matvecs`` Rademacher probes.

    For Rademacher probes ``z_1, …, z_n`` (``E[z zᵀ] = I``) the unbiased estimate and its standard error are

    .. math::

        \operatorname{tr}(A) \approx \frac{1}{n} \sum_{i=1}^n z_i^\top A z_i,
        \qquad \text{std\_error} = s / \sqrt{n},

    with ``s`` the sample standard deviation of the ``z_iᵀ A z_i``.

    Args:
        matvec: ``v ↦ A v`` on 1-D tensors of length ``dim``: a function, a
            :class:`~lightning_spectral.linalg.LinearOperator` or a dense matrix.
        dim: size of ``A`` (``>= 1``); required for a function, read from an operator or matrix.
        num_matvecs: number of probes (``>= 1``; with one probe ``std_error`` is ``nan``).
        dtype: probe dtype (default ``torch.get_default_dtype()``).
        device: probe device (default CPU).
        generator: source of the probes; ``None`` uses the global torch RNG. Must live on ``device``.
        shard_sum: for vectors sharded over processes, the all-reduce sum of partial inner products
            (:func:`~lightning_spectral.linalg.lanczos`); ``dim`` is then this process's shard length, and each
            process must draw its probes from a generator of its own.

    Returns:
        :class:`TraceEstimate` ``(estimate, std_error = s/√n, num_matvecs)``.

    Example:
        >>> import torch
        >>> A = torch.ones(10, 10, dtype=torch.float64)  # tr(A) = 10, rank one
        >>> est = hutchinson_trace(lambda v: A @ v, dim=10, num_matvecs=50, dtype=torch.float64,
        ...                        generator=torch.Generator().manual_seed(0))
        >>> abs(est.estimate - 10.0) < 3 * est.std_error
        True
    """
    inner = InnerProducts(shard_sum)
    matvec, dim, num_matvecs, dtype, device = _check_args(matvec, dim, num_matvecs, 1, dtype, device, inner)
    samples = torch.stack(
        [
            _quadratic_form(matvec, rademacher(dim, dtype=dtype, device=device, generator=generator), inner)
            for _ in range(num_matvecs)
        ]
    )
    estimate, std_error = mean_and_std_error(samples)
    return TraceEstimate(estimate, std_error, int(num_matvecs))


def hutchpp_trace(
    matvec: Matvec | LinearOperator | Tensor,
    dim: int | None = None,
    num_matvecs: int | None = None,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    shard_sum: ShardSum | None = None,
) -> TraceEstimate:
    r"""Hutch++ estimate of ``tr(A)`` for symmetric ``A`` with a budget of ``num_matvecs`` products.

    The budget ``m`` is split as ``s = ⌊m/3⌋`` sketch columns (``Q = qr(A S)``, ``S`` Gaussian), ``s``
    products for ``tr(QᵀAQ)`` and ``h = m − 2s`` Rademacher probes ``g_i`` on the deflated operator
    (Meyer, Musco, Musco & Woodruff 2021):

    .. math::

        \operatorname{tr}(A) \approx \operatorname{tr}(Q^\top A Q)
        + \frac{1}{h} \sum_{i=1}^h g_i^\top (I - QQ^\top) A (I - QQ^\top) g_i.

    If ``num_matvecs >= dim`` the trace is computed exactly from ``dim`` products with the basis vectors and ``std_error`` is ``0.0``.

    Args:
        matvec: ``v ↦ A v`` on 1-D tensors of length ``dim``: a function, a
            :class:`~lightning_spectral.linalg.LinearOperator` or a dense matrix.
        dim: size of ``A`` (``>= 1``); required for a function, read from an operator or matrix.
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

    Example:
        >>> import torch
        >>> A = torch.ones(10, 10, dtype=torch.float64)  # tr(A) = 10, rank one
        >>> est = hutchpp_trace(lambda v: A @ v, dim=10, num_matvecs=9, dtype=torch.float64,
        ...                     generator=torch.Generator().manual_seed(0))
        >>> round(est.estimate, 9), est.std_error < 1e-12  # the rank-one sketch captures A exactly
        (10.0, True)
    """
    inner = InnerProducts(shard_sum)
    matvec, dim, num_matvecs, dtype, device = _check_args(matvec, dim, num_matvecs, 3, dtype, device, inner)
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
