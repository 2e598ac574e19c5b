"""Batch sharpness: the curvature of each mini-batch loss along its own gradient (Andreyev & Beneventano 2024)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from lightning_spectral._internal.validation import check_choice
from lightning_spectral.functional._common.parameter_selection import ParamSpec
from lightning_spectral.functional.hessian.operator import (
    HVP_METHODS,
    SOLVER_HVP_METHOD,
    HessianOperator,
    HVPMethod,
    LossFn,
)
from lightning_spectral.linalg import mean_and_std_error

__all__ = ["BatchSharpness", "batch_rayleigh_quotients", "batch_sharpness", "summarized"]


class BatchSharpness(NamedTuple):
    """The result of :func:`batch_sharpness`.

    Attributes:
        value: the mean of the per-batch Rayleigh quotients (``nan`` if no batch has a non-zero gradient).
        std_error: its standard error ``s/√n`` (``nan`` with fewer than two usable batches).
        per_batch: ``g_Bᵀ H_B g_B / ‖g_B‖²`` for each batch, in order (``nan`` for a zero gradient).
        num_hvps: Hessian-vector products spent (one per batch).

    Example:
        >>> result = BatchSharpness(value=2.0, std_error=0.5, per_batch=[1.5, 2.5], num_hvps=2)
        >>> result.value, len(result.per_batch)
        (2.0, 2)
    """

    value: float
    std_error: float
    per_batch: list[float]
    num_hvps: int


def batch_rayleigh_quotients(operator: Any, gradients: list[Tensor] | None = None) -> list[float]:
    """``g_bᵀ H_b g_b / ‖g_b‖²`` for each batch ``b`` of ``operator`` (one single-batch product each; ``nan``
    for ``g_b = 0``). ``gradients``: ``operator.batch_gradients()``, which with double backward, taken before
    the operator's first product, come out of the graphs the products use -- so a caller that needs the
    operator's eigenvalues too (the Hessian monitor) pays for the gradients once; ``None``: evaluated here.
    ``operator``: a :class:`HessianOperator` or a
    :class:`~lightning_spectral.functional.hessian.finite_difference.FiniteDifferenceHessian`, whose sharded
    gradients' norms and quotients are summed over the shards (its ``shard_sum``; every rank takes the same
    products).
    """
    if gradients is None:
        gradients = operator.batch_gradients()
    total = operator.shard_sum or (lambda partial: partial)
    quotients = []
    for index, gradient in enumerate(gradients):
        squared_norm = float(total(gradient.double().square().sum()))
        if squared_norm == 0.0:
            quotients.append(math.nan)
            continue
        product = operator.batch_matvec(index, gradient)
        quotients.append(float(total(torch.dot(gradient.double(), product.double()))) / squared_norm)
    return quotients


def summarized(quotients: list[float]) -> BatchSharpness:
    """The mean and standard error of the per-batch quotients that are not ``nan``."""
    usable = [q for q in quotients if not math.isnan(q)]
    if not usable:
        return BatchSharpness(math.nan, math.nan, quotients, 0)
    value, std_error = mean_and_std_error(torch.tensor(usable, dtype=torch.float64))
    return BatchSharpness(value, std_error, quotients, len(usable))


def batch_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: list[Any],
    *,
    params: ParamSpec = None,
    hvp_method: HVPMethod = SOLVER_HVP_METHOD,
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
) -> BatchSharpness:
    r"""The curvature of each mini-batch loss along its own gradient, averaged (Andreyev & Beneventano 2024).

    .. math::

        \text{batch sharpness} = \operatorname{mean}_B \frac{g_B^\top H_B g_B}{\|g_B\|^2},

    ``g_B`` and ``H_B`` the gradient and Hessian of the loss on mini-batch ``B``.

    Args:
        model: the network (left untouched).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batches: a non-empty ``list`` of mini-batches, each of the training batch size.
        params: the parameters (see :class:`~lightning_spectral.functional.hessian.operator.HessianOperator`).
        hvp_method: ``"double_backward"`` (default: the gradient comes with the graph the product needs),
            ``"forward_over_reverse"`` or ``"auto"``; ``"auto"`` is resolved on the first batch and reused for
            the others.
        reduce_fn: applied to each gradient and product (e.g. an all-reduce mean across processes).

    Returns:
        :class:`BatchSharpness`.

    Raises:
        TypeError: ``batches`` is not a list.
        ValueError: ``batches`` is empty or ``hvp_method`` is not one of the methods.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 1)
        >>> batches = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(3)]
        >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
        >>> result = batch_sharpness(model, loss_fn, batches)
        >>> len(result.per_batch), result.num_hvps
        (3, 3)
    """
    if not isinstance(batches, list):
        hint = " (wrap one batch as [batch])" if isinstance(batches, tuple) else ""
        raise TypeError(f"`batches` must be a list of mini-batches, got {type(batches).__name__}{hint}.")
    if not batches:
        raise ValueError("`batches` must hold at least one mini-batch, got an empty list.")
    check_choice("hvp_method", hvp_method, HVP_METHODS)
    quotients = []
    method = hvp_method
    for batch in batches:  # one operator per batch: one gradient graph alive at a time
        operator = HessianOperator(
            model, loss_fn, batch, params=params, method=method, reduce_fn=reduce_fn, copy_params=False
        )
        quotients += batch_rayleigh_quotients(operator)
        method = operator.method  # "auto" resolved once
    return summarized(quotients)
