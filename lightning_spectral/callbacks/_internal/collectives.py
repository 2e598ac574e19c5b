"""The collective operations of one measurement under data parallelism, safe against a failing rank."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from lightning_spectral.functional._common.module_gradients import is_sharded_tensor
from lightning_spectral.linalg import NonFiniteError

if TYPE_CHECKING:
    import pytorch_lightning as pl

__all__ = [
    "MeasurementCollectives",
    "PeerMeasurementFailed",
    "PeerNonFinite",
    "has_distributed_parameters",
]

_ERROR_FLAG = 1024.0
"""A failing rank's contribution to the failure flag; a rank that met non-finite numbers contributes 1."""

T = TypeVar("T")


def has_distributed_parameters(module: torch.nn.Module | Iterable[Tensor]) -> bool:
    """Whether any parameter of ``module`` (or of an iterable of parameters) is a ``DTensor`` (the same answer
    on every rank).
    """
    parameters = module.parameters() if isinstance(module, torch.nn.Module) else module
    return any(is_sharded_tensor(p) for p in parameters)


class PeerMeasurementFailed(RuntimeError):
    """Raised on the ranks whose measurement went fine when another rank's measurement raised."""


class PeerNonFinite(PeerMeasurementFailed, NonFiniteError):
    """Raised on the ranks whose measurement went fine when another rank met non-finite numbers (and no rank
    failed otherwise): every rank then logs NaN, as the rank that met them does.
    """


class MeasurementCollectives:
    """Failure-aware collectives of one measurement (see the docs' implementation notes); identity on one process.

    Args:
        trainer: the running trainer; its ``strategy`` performs the collectives.

    Example::

        def measure(self, trainer, pl_module, batches):
            local = torch.tensor([partial_trace, num_examples], dtype=torch.float64)
            total = self.collectives.sum(local)  # a rank that failed makes this raise on the others
            return {"trace": float(total[0])}
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        self._strategy = trainer.strategy
        self.world_size = int(trainer.world_size)
        self.rank = int(trainer.global_rank)

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process (and so any collective at all)."""
        return self.world_size > 1

    def _flag_sum(self, contribution: float) -> float:
        flag = torch.tensor([contribution], dtype=torch.float64, device=self._strategy.root_device)
        return float(self._strategy.reduce(flag, reduce_op="sum"))

    def _check_peers(self) -> None:
        total = self._flag_sum(0.0)
        if total >= _ERROR_FLAG:
            raise PeerMeasurementFailed(
                f"the measurement failed on {int(total // _ERROR_FLAG)} other rank(s); rank {self.rank} stops "
                "it as well (see the failing rank's error)."
            )
        if total > 0:
            raise PeerNonFinite(f"{round(total)} other rank(s) met non-finite values (NaN or inf).")

    def mean(self, tensor: Tensor) -> Tensor:
        """The element-wise mean of ``tensor`` over the ranks (a new tensor; the argument is not changed)."""
        if not self.distributed:
            return tensor
        self._check_peers()
        return self._strategy.reduce(tensor.detach().clone(), reduce_op="mean")

    def sum(self, tensor: Tensor) -> Tensor:
        """The element-wise sum of ``tensor`` over the ranks (a new tensor; the argument is not changed)."""
        if not self.distributed:
            return tensor
        self._check_peers()
        return self._strategy.reduce(tensor.detach().clone(), reduce_op="sum")

    def broadcast(self, obj: T, src: int = 0) -> T:
        """Rank ``src``'s ``obj`` (any picklable object) on every rank."""
        if not self.distributed:
            return obj
        self._check_peers()
        return self._strategy.broadcast(obj, src=src)

    def gather(self, tensor: Tensor) -> Tensor:
        """The ranks' tensors concatenated along the first dimension, in rank order, on every rank. Every rank
        must pass the same shape (Lightning's distributed sampler gives every rank equally many examples).

        Args:
            tensor: this rank's part.

        Returns:
            The concatenation over the ranks.
        """
        if not self.distributed:
            return tensor
        self._check_peers()
        gathered = self._strategy.all_gather(tensor.detach())
        return gathered.reshape(-1, *tensor.shape[1:])

    def full_tensor(self, tensor: Tensor) -> Tensor:
        """The whole of a parameter that a sharding strategy (FSDP2, tensor parallel) holds as a ``DTensor``:
        every rank must call this for the same tensors in the same order (an all-gather over the tensor's
        device mesh; local for a replicated one). Any other tensor is returned as it is, with no collective.

        Args:
            tensor: a parameter (a ``DTensor`` under FSDP2) or any tensor.

        Returns:
            The whole tensor.
        """
        if not is_sharded_tensor(tensor):
            return tensor
        if self.distributed:
            self._check_peers()
        return tensor.full_tensor()

    def report_failure(self, non_finite: bool = False) -> None:
        """Called by the failing rank's error handler: lets the other ranks' next collective raise
        (:class:`PeerNonFinite` if every failing rank only met non-finite numbers).

        Args:
            non_finite: whether this rank's failure was non-finite numbers only.
        """
        if self.distributed:
            self._flag_sum(1.0 if non_finite else _ERROR_FLAG)

    def finish(self) -> None:
        """The closing flag all-reduce of a measurement that went fine on this rank."""
        if self.distributed:
            self._check_peers()
