"""Hessian-vector products by central differences of gradients, for models no rank can hold whole.

The derivation and design notes are on the docs site (implementation notes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral.functional._common.module_gradients import LocalShards, local_tensor, module_gradients
from lightning_spectral.functional._common.parameter_selection import ParamSpec
from lightning_spectral.functional.hessian.operator import (
    LossFn,
    _LossOfModel,
    checked_vector,
)
from lightning_spectral.functional.hessian.replayed_randomness import ReplayedRandomness
from lightning_spectral.linalg._inner_products import InnerProducts, ShardSum

__all__ = ["FiniteDifferenceHessian", "finite_difference_step"]


def finite_difference_step(dtype: torch.dtype, theta_norm: float, v_norm: float) -> float:
    """``ε = u^{1/3} (1 + ‖θ‖) / ‖v‖`` (module docstring), ``u`` the unit roundoff of ``dtype``."""
    unit_roundoff = torch.finfo(dtype).eps / 2
    return unit_roundoff ** (1.0 / 3.0) * (1.0 + theta_norm) / v_norm


class FiniteDifferenceHessian:
    """``v ↦ H v`` by central differences of gradients through the model's own backward (module docstring).

    The interface of :class:`~lightning_spectral.functional.hessian.operator.HessianOperator` that the estimators
    use (:meth:`matvec`, :meth:`batch_gradients`, :meth:`batch_matvec`, :attr:`dim`, :attr:`size`,
    :attr:`shard_sum`), on vectors that hold this rank's shard of every selected parameter.

    Args:
        model: the network (FSDP2-sharded or plain); moved during a product and restored bit-exactly.
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``, called with ``model`` itself (its hooks run).
        batches: a non-empty ``list`` of batches on the model's device; the Hessian is their average.
        params: which parameters (names / globs / module prefixes; default all with ``requires_grad``). The
            gradient is computed for every trainable parameter; the others' entries are left out.
        shard_sum: the all-reduce sum over the ranks that hold the shards (``None``: one process, or a plain
            model whose vectors are whole on every rank).
        reduce_fn: applied to every gradient, e.g. an all-reduce mean for a plain model under DDP; ``None``
            under FSDP2, whose backward averages already.

    Attributes:
        dim: the length of this rank's vectors (its local shards).
        size: ``P``, the operator's size (the sum of the ranks' ``dim``).
        dtype: the parameters' dtype.
        device: the parameters' device.
        num_batches: the number of batches averaged.
        num_matvecs: products computed so far.
        num_batch_matvecs: single-batch products computed so far.
        method: ``"finite_difference"``.

    Example:
        >>> import torch
        >>> from lightning_spectral.functional.hessian.operator import HessianOperator
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
        >>> batch = (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64))
        >>> loss_fn = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()
        >>> op = FiniteDifferenceHessian(model, loss_fn, [batch])
        >>> exact = HessianOperator(model, loss_fn, batch).to_dense()
        >>> v = torch.randn(op.dim, dtype=torch.float64)
        >>> bool(torch.allclose(op.matvec(v), exact @ v, rtol=1e-7, atol=1e-8))
        True
    """

    method = "finite_difference"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: list[Any],
        *,
        params: ParamSpec = None,
        shard_sum: ShardSum | None = None,
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable as loss_fn(model, batch), got {loss_fn!r}.")
        if not isinstance(batches, list) or not batches:
            raise ValueError("`batches` must be a non-empty list of batches.")
        if reduce_fn is not None and not callable(reduce_fn):
            raise TypeError(f"`reduce_fn` must be callable or None, got {reduce_fn!r}.")
        self._model = model
        self._loss = _LossOfModel(model, loss_fn)
        self._batches = batches
        self._reduce = reduce_fn
        self._inner = InnerProducts(shard_sum)
        self.shard_sum = shard_sum
        self.shards = LocalShards.of(model, params)
        self.layout = self.shards.layout
        self.names = self.layout.names
        self.dim = self.layout.dim
        self.dtype, self.device = self.layout.dtype, self.layout.device
        self.size = self._inner.size(self.dim, self.device)
        self.num_batches = len(batches)
        self.num_matvecs = 0
        self.num_batch_matvecs = 0
        self._point = self.shards.flat()  # the parameters' values, restored after every product
        self.theta_norm = float(self._inner.norm(self._point))
        self._randomness = ReplayedRandomness(self.device, self.num_batches)

    def _gradient(self, index: int) -> Tensor:
        """The flat local gradient of batch ``index`` at the model's current parameters (buffers restored)."""
        buffers = [b.detach().clone() for b in self._model.buffers()]
        try:
            with self._randomness.replay(index):
                grads = module_gradients(
                    self._model, lambda: self._loss(self._batches[index]), self.shards.parameters
                )
        finally:
            with torch.no_grad():
                for buffer, saved in zip(self._model.buffers(), buffers):
                    buffer.copy_(saved)
        # a parameter the loss does not reach has a zero gradient (its rows of the Hessian are zero)
        return self.layout.flatten(
            [
                torch.zeros_like(local_tensor(p)) if g is None else g
                for g, p in zip(grads, self.shards.parameters)
            ]
        )

    def _gradient_sum(self, batch: int | None) -> Tensor:
        indices = range(self.num_batches) if batch is None else (batch,)
        if batch is not None:
            self._randomness.prime(batch, self._gradient)
        total = None
        for index in indices:
            gradient = self._gradient(index)
            total = gradient if total is None else total.add_(gradient)
        assert total is not None
        return total

    def _reduced(self, tensor: Tensor) -> Tensor:
        return tensor if self._reduce is None else self._reduce(tensor).detach()

    def _checked(self, v: Tensor) -> Tensor:
        return checked_vector(v, self.dim, self.dtype, self.device)  # dim: this rank's shard

    def _product(self, v: Tensor, batch: int | None) -> Tensor:
        v = self._checked(v)
        v_norm = float(self._inner.norm(v))
        if not math.isfinite(v_norm):
            raise ValueError("`v` must be finite.")
        if v_norm == 0.0:
            return torch.zeros_like(v)
        step = finite_difference_step(self.dtype, self.theta_norm, v_norm)
        try:
            self.shards.write(self._point + step * v)
            plus = self._gradient_sum(batch)
            self.shards.write(self._point - step * v)
            minus = self._gradient_sum(batch)
        finally:
            self.shards.write(self._point)
        product = plus.sub_(minus).div_(2.0 * step)
        if batch is None and self.num_batches > 1:
            product.div_(self.num_batches)
        return self._reduced(product)

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` (this rank's shard of it) for this rank's shard ``v`` of a vector."""
        result = self._product(v, None)
        self.num_matvecs += 1
        return result

    __call__ = matvec

    def batch_matvec(self, batch: int, v: Tensor) -> Tensor:
        """``∇²L_b(θ) v`` of batch ``b = batch`` alone (counted in :attr:`num_batch_matvecs`)."""
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < self.num_batches:
            raise ValueError(f"`batch` must be an int in [0, {self.num_batches}), got {batch!r}.")
        result = self._product(v, batch)
        self.num_batch_matvecs += 1
        return result

    def batch_gradients(self) -> list[Tensor]:
        """Each batch's own local gradient ``∇L_b(θ)`` (through ``reduce_fn``), one backward each."""
        return [self._reduced(self._gradient(index)) for index in range(self.num_batches)]
