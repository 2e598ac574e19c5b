"""Truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import check_int

from .device_fallback import on_cpu_if_unsupported
from .orthonormalize import orthonormalize
from .results import SVDFactors

__all__ = ["randomized_svd"]

# No QR/SVD kernels exist for these dtypes; they are factorized in float32.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def thin_svd(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd(A, full_matrices=False)`` as a plain tuple ``(U, S, Vh)``."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return U, S, Vh


@renamed_keywords(n_iter="num_power_iterations", oversample="num_oversamples")
def randomized_svd(
    A: Tensor,
    k: int,
    *,
    num_oversamples: int = 10,
    num_power_iterations: int = 2,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SVDFactors:
    r"""Rank-``k`` truncated SVD of ``A`` (or of each matrix in a batch) by randomized range finding.

    Halko, Martinsson & Tropp (2011), Algorithms 4.4 and 5.1: with a Gaussian ``Ω`` of ``l = k + p``
    columns and ``q`` power iterations (each re-orthonormalized),

    .. math::

        Q = \operatorname{qr}\big((A A^\top)^q A \Omega\big), \qquad
        Q^\top A = \tilde U \Sigma V^\top, \qquad A \approx (Q \tilde U)_{:, :k} \Sigma_{:k} V_{:, :k}^\top.


    Args:
        A: ``(..., m, n)`` real floating-point tensor.
        k: number of singular triplets, ``1 <= k <= min(m, n)``.
        num_oversamples: extra sketch columns (``>= 0``); the sketch has ``l = k + num_oversamples`` columns.
        num_power_iterations: number of power iterations (``>= 0``).
        init: optional ``(..., n, r)`` warm start for the range finder (e.g. the previous ``Vh.mT``). Its
            batch dimensions must broadcast to those of ``A``; it is cast to ``A``'s dtype and device. Only
            its first ``min(r, l)`` columns are used; the remaining ``l − r`` columns are Gaussian.
        generator: source of the Gaussian test matrix; ``None`` uses the global torch RNG. Must live on
            ``A``'s device.

    Returns:
        :class:`SVDFactors` ``(U (..., m, k), S (..., k) descending, Vh (..., k, n))`` in ``A``'s dtype
        (float32 for float16/bfloat16 input) with
        ``U diag(S) Vh ≈`` the best rank-``k`` approximation of ``A``. If ``l >= min(m, n)`` the result is
        the exact truncated SVD from ``torch.linalg.svd`` (see the docs' implementation notes).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> A = torch.randn(200, 50, generator=g, dtype=torch.float64)
        >>> U, S, Vh = randomized_svd(A, k=5, num_power_iterations=4, generator=g)
        >>> U.shape, S.shape, Vh.shape
        (torch.Size([200, 5]), torch.Size([5]), torch.Size([5, 50]))
    """
    if not isinstance(A, Tensor):
        raise TypeError(f"`A` must be a torch.Tensor, got {type(A).__name__}.")
    if A.ndim < 2:
        raise ValueError(f"`A` must have at least 2 dimensions (..., m, n), got shape {tuple(A.shape)}.")
    if not A.is_floating_point():
        raise TypeError(f"`A` must have a real floating-point dtype, got {A.dtype}.")
    m, n = A.shape[-2], A.shape[-1]
    if m == 0 or n == 0:
        raise ValueError(f"`A` must have non-empty matrix dimensions, got shape {tuple(A.shape)}.")
    k = check_int("k", k, 1)
    if k > min(m, n):
        raise ValueError(f"`k` must satisfy 1 <= k <= min(m, n) = {min(m, n)}, got {k}.")
    num_oversamples = check_int("num_oversamples", num_oversamples, 0)
    num_power_iterations = check_int("num_power_iterations", num_power_iterations, 0)
    batch = A.shape[:-2]
    if init is not None:
        if not isinstance(init, Tensor) or init.ndim < 2 or init.shape[-2] != n or init.shape[-1] < 1:
            shape = tuple(init.shape) if isinstance(init, Tensor) else type(init).__name__
            raise ValueError(f"`init` must be a tensor of shape (..., n={n}, r) with r >= 1, got {shape}.")
        try:
            broadcasts = torch.broadcast_shapes(init.shape[:-2], batch) == batch
        except RuntimeError:
            broadcasts = False
        if not broadcasts:
            raise ValueError(
                f"`init` batch shape {tuple(init.shape[:-2])} must broadcast to A's batch shape {tuple(batch)}."
            )

    if A.dtype in _LOW_PRECISION:
        A = A.float()
    sketch = k + num_oversamples
    if sketch >= min(m, n):
        U, S, Vh = on_cpu_if_unsupported(thin_svd, A)
        return SVDFactors(U[..., :k], S[..., :k], Vh[..., :k, :])

    omega = torch.randn(*batch, n, sketch, dtype=A.dtype, device=A.device, generator=generator)
    if init is not None:
        r = min(init.shape[-1], sketch)
        warm = init[..., :r].to(dtype=A.dtype, device=A.device).expand(*batch, n, r)
        omega = torch.cat([warm, omega[..., r:]], dim=-1)

    Q = orthonormalize(A @ omega)
    At = A.mT
    for _ in range(num_power_iterations):
        Q = orthonormalize(A @ orthonormalize(At @ Q))
    B = Q.mT @ A
    U_small, S, Vh = on_cpu_if_unsupported(thin_svd, B)
    U = Q @ U_small[..., :k]
    return SVDFactors(U, S[..., :k], Vh[..., :k, :])
