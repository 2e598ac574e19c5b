"""Inner products of vectors that are whole or sharded over processes: the one hook the matrix-free routines
(:func:`~lightning_spectral.linalg.lanczos`, :func:`~lightning_spectral.linalg.slq_density`,
:func:`~lightning_spectral.linalg.hutchinson_trace`, :func:`~lightning_spectral.linalg.hutchpp_trace`) need to
run on vectors that no process holds whole.

The derivation and design notes are on the docs site (implementation notes).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .orthonormalize import orthonormalize, project_out

ShardSum = Callable[[Tensor], Tensor]

__all__ = ["InnerProducts", "ShardSum"]


class InnerProducts:
    """Dot products, norms and projections for whole vectors (``shard_sum=None``) or shards (module docstring).

    Args:
        shard_sum: ``None`` or the all-reduce sum over the processes that hold the shards.
    """

    def __init__(self, shard_sum: ShardSum | None = None) -> None:
        if shard_sum is not None and not callable(shard_sum):
            raise TypeError(
                f"`shard_sum` must be None or a callable summing a tensor over processes, got {shard_sum!r}."
            )
        self.shard_sum = shard_sum

    @property
    def sharded(self) -> bool:
        return self.shard_sum is not None

    def total(self, partial: Tensor) -> Tensor:
        """The sum over the shards of ``partial`` (itself when whole)."""
        if self.shard_sum is None:
            return partial
        total = self.shard_sum(partial)
        if not isinstance(total, Tensor) or total.shape != partial.shape:
            raise ValueError("`shard_sum` must return a tensor of its argument's shape.")
        return total

    def size(self, dim: int, device: torch.device | str | None = None) -> int:
        """The operator's size: ``dim`` for whole vectors, the sum of the shards' lengths otherwise (reduced on
        ``device``, the vectors' device: a NCCL all-reduce needs a CUDA tensor).
        """
        if self.shard_sum is None:
            return dim
        return int(self.total(torch.tensor([float(dim)], dtype=torch.float64, device=device)).round())

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        return self.total(torch.dot(a, b))

    def norm(self, w: Tensor) -> Tensor:
        if self.shard_sum is None:
            return torch.linalg.vector_norm(w)
        return self.total(torch.dot(w, w)).clamp_min(0.0).sqrt()

    def project_out(self, w: Tensor, basis: Tensor, num_passes: int = 2) -> Tensor:
        """``w`` minus its projection onto the orthonormal columns of ``basis`` (classical Gram-Schmidt)."""
        if self.shard_sum is None or basis.shape[-1] == 0:
            return project_out(w, basis, num_passes)
        for _ in range(num_passes):
            w = w - basis @ self.total(basis.mT @ w)
        return w

    def orthonormalize(self, X: Tensor) -> Tensor:
        """An orthonormal basis of the columns of the tall ``X``; sharded: Gram-Schmidt twice per column (a column
        that vanishes, a rank deficiency, becomes zero: it adds nothing to a projection or a trace).
        """
        if self.shard_sum is None:
            return orthonormalize(X)
        columns: list[Tensor] = []
        for i in range(X.shape[-1]):
            basis = torch.stack(columns, dim=1) if columns else X[:, :0]
            original = self.norm(X[:, i])
            q = self.project_out(X[:, i], basis, num_passes=2)
            norm = self.norm(q)
            tiny = float(norm) <= 10 * torch.finfo(X.dtype).eps * float(original)
            columns.append(torch.zeros_like(q) if tiny else q / norm)
        return torch.stack(columns, dim=1)
