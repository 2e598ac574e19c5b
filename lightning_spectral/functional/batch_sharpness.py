"""Batch sharpness (Andreyev & Beneventano, "Edge of Stochastic Stability", arXiv:2412.20553).

Under mini-batch SGD the top eigenvalue of the full-batch Hessian stays below ``2/η``; what stabilises at
``2/η`` is the *batch sharpness*, the expected curvature of the mini-batch loss along its own gradient
(their Definition 3, Eq. 3):

    BatchSharpness(θ) = E_B [ ∇L_B(θ)ᵀ ∇²L_B(θ) ∇L_B(θ) / ‖∇L_B(θ)‖² ]

— the expectation of the Rayleigh quotient over mini-batches ``B`` of the training batch size, estimated
here by the mean over the given batches (one gradient and one Hessian-vector product per batch). A batch
whose gradient is exactly zero has no direction and is left out of the mean.

Example::

    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]
    >>> loss_fn = lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1])
    >>> result = batch_sharpness(model, loss_fn, batches)
    >>> len(result.per_batch)
    3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_spectral.functional.hessian_operator import HessianOperator, LossFn
from lightning_spectral.functional.model_jacobian import ParamSpec
from lightning_spectral.linalg import mean_and_std_error


class BatchSharpness(NamedTuple):
    """The mean Rayleigh quotient over the batches, its standard error and the per-batch values."""

    value: float
    std_error: float
    per_batch: list[float]


def batch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    *,
    params: ParamSpec = None,
    method: str = "auto",
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
) -> BatchSharpness:
    """``mean_B gᵀ H_B g / ‖g‖²`` with ``g = ∇L_B`` over ``batches`` (a list of mini-batches)."""
    if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or len(batches) == 0:
        raise ValueError("`batches` must be a non-empty list of mini-batches.")
    quotients = []
    for batch in batches:
        op = HessianOperator(model, loss_fn, batch, params=params, method=method, reduce_fn=reduce_fn)
        _, gradient = op.loss_and_gradient()
        squared_norm = float(gradient.double().pow(2).sum())
        if squared_norm == 0.0:
            continue
        quotients.append(float(gradient.double() @ op.matvec(gradient).double()) / squared_norm)
    if not quotients:
        return BatchSharpness(math.nan, math.nan, [])
    mean, std_error = mean_and_std_error(torch.tensor(quotients, dtype=torch.float64))
    return BatchSharpness(float(mean), float(std_error), quotients)
