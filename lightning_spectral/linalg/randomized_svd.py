"""Truncated SVD by randomized range finding (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1).

For ``A ∈ R^{m×n}``, target rank ``k`` and sketch size ``l = k + oversample``:

1. draw a Gaussian test matrix ``Ω ∈ R^{n×l}`` (or warm-start it, see below) and form ``Q = qr(A Ω)``;
2. power (subspace) iteration, ``q = n_iter`` times: ``Q̃ = qr(Aᵀ Q)``, ``Q = qr(A Q̃)``. Re-orthonormalising
   after *every* multiplication keeps the small singular directions from being swamped by rounding
   (HMT Algorithm 4.4); after ``q`` iterations the sketch sees ``σ_i^{2q+1}`` instead of ``σ_i``;
3. ``B = Qᵀ A ∈ R^{l×n}``, ``B = Û S Vh`` (small dense SVD), ``U = Q Û``, truncated to the top ``k``.

The expected spectral error ``E‖A − QQᵀA‖`` is bounded by the optimum ``σ_{k+1}`` times a factor that tends to
one as ``q`` grows (HMT Corollary 10.10: the factor enters with the power ``1/(2q+1)``). The cost is
``2q + 2`` products with ``A`` or ``Aᵀ`` plus QRs of ``m×l`` and ``n×l`` matrices and a small ``l×n`` SVD.

Shapes. Batches ``(..., m, n)`` are handled in one batched call (every step above is a batched torch op).
Wide matrices (``m < n``) need no special treatment: the algorithm only factors the ``m×l`` and ``n×l``
sketches and on the randomized path ``l < min(m, n)``, so both are tall.

Exact path. When ``l >= min(m, n)`` the sketch would span the whole column (or row) space and the
randomized algorithm would do at least the work of a dense SVD without being exact; we then call
``torch.linalg.svd`` directly, which is both cheaper and exact.

Precision. float16/bfloat16 inputs (e.g. weights under ``precision="bf16-true"``) are factorised in float32
and the result is float32; other dtypes are kept.

Autograd. Nothing is detached: pass ``weight.detach()`` to measure a parameter without recording a graph.

Warm start. ``init`` (``(..., n, r)``, e.g. ``Vh.mT`` from the previous call while a weight matrix trains
slowly) replaces the first ``min(r, l)`` columns of ``Ω``; the rest stays Gaussian. If ``init`` spans the
top-``k`` right singular subspace exactly, ``A Ω`` contains the top-``k`` left singular subspace and a
single pass (``n_iter=0``) is exact.

Example::

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> A = torch.randn(200, 50, generator=g, dtype=torch.float64)
    >>> U, S, Vh = randomized_svd(A, k=5, n_iter=4, generator=g)
    >>> U.shape, S.shape, Vh.shape
    (torch.Size([200, 5]), torch.Size([5]), torch.Size([5, 50]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_int
from .device_fallback import on_cpu_if_unsupported
from .orthonormalize import orthonormalize
from .results import SVDResult

__all__ = ["randomized_svd"]

# No QR/SVD kernels exist for these dtypes; they are factorised in float32.
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def thin_svd(A: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``torch.linalg.svd(A, full_matrices=False)`` as a plain tuple ``(U, S, Vh)``."""
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return U, S, Vh


def randomized_svd(
    A: Tensor,
    k: int,
    *,
    oversample: int = 10,
    n_iter: int = 2,
    init: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SVDResult:
    """Rank-``k`` truncated SVD of ``A`` (or of each matrix in a batch) by randomized range finding.

    Args:
        A: ``(..., m, n)`` real floating-point tensor.
        k: number of singular triplets, ``1 <= k <= min(m, n)``.
        oversample: extra sketch columns (``>= 0``); the sketch has ``l = k + oversample`` columns.
        n_iter: number of power iterations (``>= 0``).
        init: optional ``(..., n, r)`` warm start for the range finder (e.g. the previous ``Vh.mT``). Its
            batch dimensions must broadcast to those of ``A``; it is cast to ``A``'s dtype and device. Only
            its first ``min(r, l)`` columns are used; the remaining ``l − r`` columns are Gaussian.
        generator: source of the Gaussian test matrix; ``None`` uses the global torch RNG. Must live on
            ``A``'s device.

    Returns:
        :class:`SVDResult` ``(U (..., m, k), S (..., k) descending, Vh (..., k, n))`` in ``A``'s dtype
        (float32 for float16/bfloat16 input) with
        ``U diag(S) Vh ≈`` the best rank-``k`` approximation of ``A``. If ``l >= min(m, n)`` the result is
        the exact truncated SVD from ``torch.linalg.svd`` (see module docstring).
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
    oversample = check_int("oversample", oversample, 0)
    n_iter = check_int("n_iter", n_iter, 0)
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
    sketch = k + oversample
    if sketch >= min(m, n):
        U, S, Vh = on_cpu_if_unsupported(thin_svd, A)
        return SVDResult(U[..., :k], S[..., :k], Vh[..., :k, :])

    omega = torch.randn(*batch, n, sketch, dtype=A.dtype, device=A.device, generator=generator)
    if init is not None:
        r = min(init.shape[-1], sketch)
        warm = init[..., :r].to(dtype=A.dtype, device=A.device).expand(*batch, n, r)
        omega = torch.cat([warm, omega[..., r:]], dim=-1)

    Q = orthonormalize(A @ omega)
    At = A.mT
    for _ in range(n_iter):
        Q = orthonormalize(A @ orthonormalize(At @ Q))
    B = Q.mT @ A
    U_small, S, Vh = on_cpu_if_unsupported(thin_svd, B)
    U = Q @ U_small[..., :k]
    return SVDResult(U, S[..., :k], Vh[..., :k, :])
