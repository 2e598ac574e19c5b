"""Dense factorizations on devices that lack them: run on the CPU and move the result back.

Example::

    >>> import torch
    >>> Q = on_cpu_if_unsupported(lambda X: torch.linalg.qr(X).Q, torch.randn(5, 3))
    >>> Q.shape
    torch.Size([5, 3])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import Tensor

__all__ = ["on_cpu_if_unsupported"]

T = TypeVar("T")


def _on_cpu(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"


def on_cpu_if_unsupported(op: Callable[..., T], *tensors: Tensor) -> T:
    """``op(*tensors)`` on the tensors' device, or on CPU copies if that device raises ``NotImplementedError``
    (see the docs' implementation notes). ``op`` returns a tensor or a tuple of tensors.
    """
    try:
        return op(*tensors)
    except NotImplementedError:
        if all(_on_cpu(t) for t in tensors):
            raise
    device = tensors[0].device
    result: Any = op(*(t.cpu() for t in tensors))  # a tensor, a tuple or a torch.return_types of tensors
    if isinstance(result, Tensor):
        return result.to(device)  # type: ignore[return-value]  # T is Tensor here (mypy cannot narrow a TypeVar)
    return type(result)(r.to(device) for r in result)
