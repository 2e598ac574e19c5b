"""Top eigenvalues, trace and spectral density of a loss Hessian, from exact Hessian-vector products.

- :func:`hessian_eigenvalues`: Lanczos (:func:`lightning_spectral.linalg.lanczos`) on
  :class:`~lightning_spectral.functional.hessian_operator.HessianOperator`: the ``k`` extreme eigenvalues
  ``λ_1 ≥ λ_2 ≥ …`` ("sharpness" is ``λ_1 = λ_max``), their eigenvectors and residuals ``‖Hv − λv‖``.
  ``which="SA"`` gives the most negative ones (saddles), ``"LM"`` the largest in magnitude.
- :func:`hessian_trace`: ``tr H`` by Hutch++ (default) or Hutchinson, with a standard error.
- :func:`hessian_density`: the eigenvalue density by stochastic Lanczos quadrature (nodes and weights).

Each takes either ``(model, loss_fn, batch)`` or a ready ``operator=`` (to share one operator, e.g. one built
with :meth:`HessianOperator.from_batches` or with a distributed ``reduce_fn``).

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    >>> batch = (torch.randn(32, 4), torch.randn(32, 1))
    >>> loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
    >>> result = hessian_eigenvalues(model, loss_fn, batch, k=2)
    >>> result.eigenvalues.shape, bool(result.eigenvalues[0] >= result.eigenvalues[1])
    (torch.Size([2]), True)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_spectral.functional.hessian_operator import HessianOperator, LossFn
from lightning_spectral.functional.model_jacobian import ParamSpec
from lightning_spectral.linalg import (
    SpectralDensity,
    TraceEstimate,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    slq_density,
)

TRACE_METHODS = ("hutchpp", "hutchinson")


class HessianEigenResult(NamedTuple):
    """Eigenvalues (ordered per ``which``), eigenvectors ``(P, k)``, residual norms, HVPs used, convergence."""

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    num_hvps: int
    converged: bool


def _operator(
    operator: HessianOperator | None,
    model: nn.Module | None,
    loss_fn: LossFn | None,
    batch: Any,
    params: ParamSpec,
    method: str,
) -> HessianOperator:
    if operator is not None:
        if not isinstance(operator, HessianOperator):
            raise TypeError(f"`operator` must be a HessianOperator, got {type(operator).__name__}.")
        return operator
    if model is None or loss_fn is None:
        raise ValueError("Give `model`, `loss_fn` and `batch`, or a ready `operator`.")
    return HessianOperator(model, loss_fn, batch, params=params, method=method)


def start_vector(v0: Tensor | None, dim: int) -> Tensor | None:
    """One Lanczos start vector from a warm start: a flat vector, or the sum of the columns of ``(dim, j)``.

    The sum of the previous top eigenvectors has a component along each of them, so the Krylov space
    recovers all of them in a few steps while the spectrum moves slowly.
    """
    if v0 is None:
        return None
    if v0.dim() == 2:
        v0 = v0.sum(dim=1)
    if v0.shape != (dim,):
        raise ValueError(f"`v0` must have shape ({dim},) or ({dim}, j), got {tuple(v0.shape)}.")
    return v0 if bool(v0.norm() > 0) else None


def hessian_eigenvalues(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    k: int = 1,
    *,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int = 50,
    v0: Tensor | None = None,
    params: ParamSpec = None,
    method: str = "auto",
    generator: torch.Generator | None = None,
    operator: HessianOperator | None = None,
) -> HessianEigenResult:
    """The ``k`` extreme Hessian eigenvalues by Lanczos (``which``: ``"LA"`` largest, ``"SA"`` smallest,
    ``"LM"`` largest magnitude), stopping when every residual ``‖Hv − λv‖ ≤ tol·|λ|`` or after ``max_iter``
    products. ``v0`` warm-starts (a previous eigenvector, or ``(P, j)`` previous eigenvectors)."""
    op = _operator(operator, model, loss_fn, batch, params, method)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= op.dim:
        raise ValueError(f"`k` must be an integer in [1, {op.dim}] (the number of parameters), got {k!r}.")
    before = op.num_matvecs
    result = lanczos(
        op.matvec,
        op.dim,
        k,
        max_iter=min(max_iter, op.dim) if isinstance(max_iter, int) and max_iter >= k else max_iter,
        tol=tol,
        v0=start_vector(v0.to(device=op.device, dtype=op.dtype) if v0 is not None else None, op.dim),
        which=which,
        dtype=op.dtype,
        device=op.device,
        generator=generator,
    )
    return HessianEigenResult(
        result.eigenvalues, result.eigenvectors, result.residuals, op.num_matvecs - before, result.converged
    )


def hessian_trace(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    *,
    num_matvecs: int = 30,
    method: str = "hutchpp",
    params: ParamSpec = None,
    hvp_method: str = "auto",
    generator: torch.Generator | None = None,
    operator: HessianOperator | None = None,
) -> TraceEstimate:
    """``tr H`` by Hutch++ (``method="hutchpp"``) or Hutchinson with ``num_matvecs`` products."""
    if method not in TRACE_METHODS:
        raise ValueError(f"`method` must be one of {TRACE_METHODS}, got {method!r}.")
    op = _operator(operator, model, loss_fn, batch, params, hvp_method)
    estimator = hutchpp_trace if method == "hutchpp" else hutchinson_trace
    return estimator(op.matvec, op.dim, num_matvecs, dtype=op.dtype, device=op.device, generator=generator)


def hessian_density(
    model: nn.Module | None = None,
    loss_fn: LossFn | None = None,
    batch: Any = None,
    *,
    num_probes: int = 2,
    num_steps: int = 30,
    params: ParamSpec = None,
    hvp_method: str = "auto",
    generator: torch.Generator | None = None,
    operator: HessianOperator | None = None,
) -> SpectralDensity:
    """The Hessian eigenvalue density by stochastic Lanczos quadrature (``num_probes·num_steps`` products)."""
    op = _operator(operator, model, loss_fn, batch, params, hvp_method)
    return slq_density(
        op.matvec,
        op.dim,
        num_probes=num_probes,
        num_steps=min(num_steps, op.dim),
        dtype=op.dtype,
        device=op.device,
        generator=generator,
    )
