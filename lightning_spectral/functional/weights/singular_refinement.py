"""Checking a truncated SVD by its residuals, and refining it by Lanczos where the check fails.

Example::

    >>> import torch
    >>> from lightning_spectral.linalg import randomized_svd
    >>> W = torch.randn(300, 200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> U, S, Vh = randomized_svd(W[None], 5, num_power_iterations=0)
    >>> bool(relative_residuals(W[None], U, S, Vh)[0] > 1e-3)  # a flat spectrum: the sketch is off
    True
    >>> U, S, Vh, residual, refined = refine_truncated_svd(W[None], U, S, Vh, tol=1e-3)
    >>> refined, bool(residual[0] <= 1e-3)
    ([True], True)
    >>> bool(torch.allclose(S[0], torch.linalg.svdvals(W)[:5], rtol=1e-6))
    True
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_spectral.linalg import guarded_start, lanczos
from lightning_spectral.linalg.device_fallback import on_cpu_if_unsupported
from lightning_spectral.linalg.randomized_svd import thin_svd

__all__ = [
    "DENSE_MAX_DIM",
    "GUARD_PAIRS",
    "LANCZOS_MAX_ITER",
    "REFINED_TOL_FACTOR",
    "refine_truncated_svd",
    "relative_residuals",
]

GUARD_PAIRS = 5
"""Extra Ritz pairs a refinement converges beyond the ``k`` it reports (guards against a missed vector)."""

REFINED_TOL_FACTOR = 0.1
"""A refinement converges to ``tol·REFINED_TOL_FACTOR``: once Lanczos runs, the last digits are cheap (its
convergence accelerates), and the value error falls with the residual squared over the gap — with ``tol``
itself the closely spaced top-32 of a ``1/i`` spectrum kept ~3e-3 errors, with ``tol/10`` ~1e-5."""

LANCZOS_MAX_ITER = 500
"""Most products with the Gram matrix one refinement may take before the dense SVD is used instead."""

DENSE_MAX_DIM = 128
"""A failing result of a matrix with ``min(m, n) <= DENSE_MAX_DIM`` is recomputed by the dense SVD, not by
Lanczos (see the docs' implementation notes)."""


def relative_residuals(stack: Tensor, U: Tensor, S: Tensor, Vh: Tensor) -> Tensor:
    """``(B,)``: ``max_i ρ_i / σ̃_i`` of each matrix of ``stack`` (``(B, m, n)``) for the triplets
    ``U (B, m, k)``, ``S (B, k)``, ``Vh (B, k, n)`` (0 where ``ρ_i = 0``, ``inf`` where only ``σ̃_i = 0``).
    """
    V = Vh.mT
    left = stack @ V - U * S[:, None, :]
    right = stack.mT @ U - V * S[:, None, :]
    rho = (left.pow(2).sum(1) + right.pow(2).sum(1)).sqrt()
    ratio = torch.where(rho == 0, torch.zeros_like(rho), rho / S)
    return ratio.amax(dim=1)


def _lanczos_triplets(
    W: Tensor, k: int, tol: float, start: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """Top-``k`` ``(U (m, k), S (k,), Vh (k, n))`` of ``W`` by Lanczos on its smaller Gram matrix, or
    ``None`` if Lanczos did not converge. ``start`` is a vector on the Gram side (length ``min(m, n)``).
    """
    tall = W.shape[0] >= W.shape[1]
    A = W if tall else W.mT  # A has the fewer columns: the Gram matrix AᵀA is the smaller one
    dim = A.shape[1]
    # The sketch alone can be nearly orthogonal to a top singular vector it missed, and Lanczos would then
    # converge to the next one and report it (small residual, wrong index): add a Gaussian share.
    start = guarded_start(start, generator)
    result = lanczos(
        lambda v: A.mT @ (A @ v),
        dim,
        min(dim, k + GUARD_PAIRS),  # guard pairs: the k-th must have converged with others beyond it
        tol=tol,
        max_matvecs=min(dim, max(LANCZOS_MAX_ITER, 2 * (k + GUARD_PAIRS))),
        v0=start,
        dtype=W.dtype,
        device=W.device,
        generator=generator,
    )
    if not result.converged:
        return None
    sigma = result.eigenvalues[:k].clamp(min=0).sqrt()
    X = result.eigenvectors[:, :k]
    Y = (A @ X) / sigma.clamp(min=torch.finfo(W.dtype).tiny) * (sigma > 0)  # u = A v / σ; 0 for σ = 0
    U, V = (Y, X) if tall else (X, Y)
    return U, sigma, V.mT


def refine_truncated_svd(
    stack: Tensor,
    U: Tensor,
    S: Tensor,
    Vh: Tensor,
    *,
    tol: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, list[bool]]:
    """Check the truncated SVDs ``(U, S, Vh)`` of ``stack`` (``(B, m, n)``) and recompute those whose
    relative residual exceeds ``tol`` (see the docs' implementation notes). Returns ``(U, S, Vh, residuals (B,), refined)``
    with ``refined[b]`` telling whether matrix ``b`` was recomputed (new tensors; the inputs are not changed).
    """
    residuals = relative_residuals(stack, U, S, Vh)
    refined = [False] * stack.shape[0]
    failing = [b for b, r in enumerate(residuals.tolist()) if not r <= tol]
    if not failing:
        return U, S, Vh, residuals, refined
    U, S, Vh, residuals = U.clone(), S.clone(), Vh.clone(), residuals.clone()
    k = S.shape[1]
    for b in failing:
        W = stack[b]
        warm = Vh[b].sum(0) if W.shape[0] >= W.shape[1] else U[b].sum(1)
        triplets = None
        # The Gram matrix squares the dynamic range (σ_k²/σ_1²): in float32 its rounding floor can exceed
        # tol·σ_k² (4096², σ_i = 1/i, k = 32: residual 1.5e-2 after a float32 refinement). So: Lanczos in the
        # weight's dtype; if its triplets fail the check, in float64; if those fail too, the dense SVD.
        dtypes = [W.dtype] + ([torch.float64] if W.dtype != torch.float64 else [])
        for dtype in dtypes if min(W.shape) > DENSE_MAX_DIM else []:
            found = _lanczos_triplets(W.to(dtype), k, tol * REFINED_TOL_FACTOR, warm.to(dtype), generator)
            if found is not None:
                u, s, vh = (t.to(W.dtype) for t in found)
                if relative_residuals(W[None], u[None], s[None], vh[None])[0] <= tol:
                    triplets = u, s, vh
                    break
        if triplets is None:  # not converged, or not good enough: the dense SVD is always right
            full_U, full_S, full_Vh = on_cpu_if_unsupported(thin_svd, W)
            triplets = full_U[:, :k], full_S[:k], full_Vh[:k]
        U[b], S[b], Vh[b] = triplets
        residuals[b] = relative_residuals(W[None], U[b : b + 1], S[b : b + 1], Vh[b : b + 1])[0]
        refined[b] = True
    return U, S, Vh, residuals, refined
