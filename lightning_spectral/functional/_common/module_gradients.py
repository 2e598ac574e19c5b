"""Gradients through a module's own ``backward``, for parameters that may be sharded (FSDP2 ``DTensor``).

The derivation and design notes are on the docs site (implementation notes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from typing_extensions import TypeIs

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

from lightning_spectral.functional._common.parameter_selection import (
    ParameterLayout,
    ParamSpec,
    select_parameters,
)

__all__ = ["LocalShards", "is_sharded_tensor", "local_tensor", "module_gradients"]


def is_sharded_tensor(tensor: object) -> TypeIs[DTensor]:
    """Whether ``tensor`` is a ``torch.distributed.tensor.DTensor`` (how FSDP2's ``fully_shard`` and tensor
    parallelism hold parameters); ``False`` where torch has no distributed support.
    """
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local_tensor(tensor: Tensor) -> Tensor:
    """This rank's part of ``tensor``: the local shard of a ``DTensor`` (a view of its storage), else itself."""
    return tensor.to_local() if is_sharded_tensor(tensor) else tensor


@dataclass(frozen=True)
class LocalShards:
    """The selected parameters (``parameters``, as the model holds them) and the layout of their local shards."""

    parameters: tuple[nn.Parameter, ...]
    layout: ParameterLayout

    @classmethod
    def of(cls, model: nn.Module, params: ParamSpec = None) -> LocalShards:
        selected = select_parameters(model, params)
        with torch.no_grad():
            local = {name: local_tensor(p) for name, p in selected.items()}
        return cls(tuple(selected.values()), ParameterLayout.from_tensors(local))

    def local_tensors(self) -> list[Tensor]:
        """The live local shards (in-place writes reach the parameters)."""
        with torch.no_grad():
            return [local_tensor(p) for p in self.parameters]

    def flat(self) -> Tensor:
        """A copy of the local shards as one flat vector."""
        with torch.no_grad():
            return self.layout.flatten(self.local_tensors()).clone()

    def write(self, flat: Tensor) -> None:
        """Copy the flat vector ``flat`` into the local shards (bit-exact: ``copy_``)."""
        with torch.no_grad():
            for tensor, piece in zip(self.local_tensors(), self.layout.unflatten(flat).values()):
                tensor.copy_(piece)


def module_gradients(
    model: nn.Module, loss: Callable[[], Tensor], parameters: Sequence[Tensor]
) -> list[Tensor | None]:
    """``loss().backward()`` through the module's own hooks; the local gradients of ``parameters`` (``None``
    where none arrived). Every parameter's ``.grad`` of ``model`` is set aside during the call and put back.
    """
    everything = list(model.parameters())
    saved = [p.grad for p in everything]
    try:
        for p in everything:
            p.grad = None
        with torch.enable_grad():
            value = loss()
            value.backward()
        return [None if p.grad is None else local_tensor(p.grad).detach() for p in parameters]
    finally:
        for p, grad in zip(everything, saved):
            p.grad = grad
