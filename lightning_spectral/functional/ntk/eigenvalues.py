"""Top eigenvalues of the empirical NTK by Lanczos on NTK-vector products, never forming the matrix."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_spectral._internal.deprecation import renamed_keywords
from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.ntk.model_jacobian import (
    OutputFn,
    ParamSpec,
    make_functional_model,
    ntk_products,
    validate_inputs,
)
from lightning_spectral.linalg import Eigenpairs, guarded_start, lanczos

__all__ = ["NTKOperator", "ntk_lambda_max", "ntk_operator"]


class NTKOperator(NamedTuple):
    """``matvec`` maps a flat ``v ∈ R^dim`` (``dim = B·K``, example-major) to ``Θ v``; ``dtype`` and
    ``device`` are those of the model outputs.
    """

    matvec: Callable[[Tensor], Tensor]
    dim: int
    dtype: torch.dtype
    device: torch.device


def ntk_operator(
    model: nn.Module, inputs: Tensor, *, output_fn: OutputFn | None = None, params: ParamSpec = None
) -> NTKOperator:
    """The map ``v ↦ Θ v = J (Jᵀ v)`` (one VJP, then one JVP) for the current parameters of ``model``, which
    is checked and left untouched as in :func:`ntk_lambda_max`. One forward pass is done here (and kept
    for the VJPs); each product then costs a backward and a forward-mode pass.

    Args:
        model: the network; BatchNorm and dropout in eval mode. Left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``).
        params: parameter names / globs (default: all with ``requires_grad=True``).

    Returns:
        An operator with ``matvec``, ``dim`` (``B·K``), ``dtype`` and ``device``.

    Raises:
        ValueError: a model in train mode with BatchNorm or dropout, or ``params`` matching nothing.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> operator = ntk_operator(model, torch.randn(4, 3))
        >>> operator.dim, operator.matvec(torch.ones(operator.dim)).shape
        (8, torch.Size([8]))
    """
    validate_inputs(inputs)
    fm = make_functional_model(model, output_fn=output_fn, params=params)
    outputs, _, matvec = ntk_products(fm, inputs)
    return NTKOperator(matvec=matvec, dim=outputs.numel(), dtype=outputs.dtype, device=outputs.device)


@renamed_keywords(max_iter="max_matvecs")
def ntk_lambda_max(
    model: nn.Module,
    inputs: Tensor,
    *,
    k: int = 1,
    tol: float = 1e-6,
    max_matvecs: int | None = None,
    v0: Tensor | None = None,
    output_fn: OutputFn | None = None,
    params: ParamSpec = None,
    generator: torch.Generator | None = None,
) -> Eigenpairs:
    """The ``k`` largest eigenvalues of the empirical NTK ``Θ = J Jᵀ`` of ``inputs``, by Lanczos.

    Args:
        model: the network; BatchNorm and dropout must be in eval mode. Left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        k: number of top eigenvalues (``1 ≤ k ≤ B·K``).
        tol: relative residual tolerance of :func:`~lightning_spectral.linalg.lanczos`.
        max_matvecs: at most this many NTK-vector products (default as in
            :func:`~lightning_spectral.linalg.lanczos`).
        v0: a start vector of length ``B·K``, e.g. the previous call's top eigenvector, to warm-start a
            monitor.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        generator: random source of the Lanczos start vector; ``None`` uses the global torch RNG.

    Returns:
        ``Eigenpairs``: ``eigenvalues`` ``(k,)`` descending, ``eigenvectors`` ``(B·K, k)`` in the
        example-major output space, ``residuals``, ``num_matvecs`` (each one VJP + one JVP) and
        ``converged``. Divide by ``B`` for the Gauss–Newton sharpness of ``(1/(2B)) Σ‖f − y‖²`` (see the
        the docs' implementation notes).

    Raises:
        ValueError: ``k`` out of range, a model in train mode with BatchNorm or dropout (and as
            :func:`~lightning_spectral.linalg.lanczos`).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> result = ntk_lambda_max(model, torch.randn(16, 4), k=2, generator=torch.Generator().manual_seed(0))
        >>> result.eigenvalues.shape
        torch.Size([2])
    """
    check_int("k", k, 1)
    operator = ntk_operator(model, inputs, output_fn=output_fn, params=params)
    if k > operator.dim:
        raise ValueError(f"`k` must be at most B·K = {operator.dim}, got {k}.")
    return lanczos(
        operator,
        k=k,
        max_matvecs=max_matvecs,
        tol=tol,
        v0=None
        if v0 is None
        else guarded_start(v0.to(dtype=operator.dtype, device=operator.device), generator),
        which="LA",
        generator=generator,
    )
