"""Orthonormalization helpers shared by the randomized SVD and the Lanczos iteration."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_spectral._internal.deprecation import renamed_keywords

from .device_fallback import on_cpu_if_unsupported

__all__ = ["orthonormalize", "project_out"]


def orthonormalize(X: Tensor) -> Tensor:
    """Orthonormal basis of the column space of ``X`` (``(..., m, l)`` with ``l <= m``), via reduced QR.

    Householder QR returns ``Q`` with orthonormal columns for any input, so rank-deficient ``X`` gives
    arbitrary (but orthonormal) extra columns rather than NaNs.

    Args:
        X: ``(..., m, l)`` tensor with ``l <= m``.

    Returns:
        ``(..., m, l)`` tensor with orthonormal columns spanning the columns of ``X``.

    Example:
        >>> import torch
        >>> Q = orthonormalize(torch.randn(5, 2, dtype=torch.float64))
        >>> torch.allclose(Q.mT @ Q, torch.eye(2, dtype=torch.float64))
        True
    """
    if X.shape[-1] > X.shape[-2]:
        raise ValueError(f"`X` must be tall (..., m, l) with l <= m, got shape {tuple(X.shape)}.")
    return on_cpu_if_unsupported(_reduced_q, X)


def _reduced_q(X: Tensor) -> Tensor:
    return torch.linalg.qr(X, mode="reduced").Q


@renamed_keywords(passes="num_passes")
def project_out(w: Tensor, basis: Tensor, num_passes: int = 2) -> Tensor:
    """``w`` minus its orthogonal projection onto ``span(basis)`` (orthonormal columns), CGS applied twice.

    Args:
        w: ``(n,)`` vector.
        basis: ``(n, j)`` matrix with orthonormal columns (``j`` may be 0).
        num_passes: Gram–Schmidt passes (default 2, "twice is enough"); the Lanczos iteration runs one and
            decides about the second from the norms (DGKS criterion).

    Returns:
        ``(n,)`` vector orthogonal to ``basis`` up to rounding (with ``num_passes=2``).

    Example:
        >>> import torch
        >>> basis = torch.eye(3, dtype=torch.float64)[:, :1]
        >>> project_out(torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64), basis).tolist()
        [0.0, 1.0, 1.0]
    """
    if basis.shape[-1] == 0:
        return w
    for _ in range(num_passes):
        w = w - basis @ (basis.mT @ w)
    return w
