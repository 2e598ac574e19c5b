"""The double-backward cache of a Hessian operator: every batch's gradient graph, built once, and products
through it.

Example::

    >>> import torch
    >>> w = torch.tensor([1.0, 2.0])
    >>> graphs = GradientGraphs.build({"w": w}, 1, lambda p, b: (p["w"] ** 3).sum(), torch.cat)
    >>> graphs.product((torch.tensor([1.0, 0.0]),), retain_graph=False)  # H = diag(6w)
    [tensor([6., 0.])]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.graph import GradientEdge, get_gradient_edge

__all__ = ["GradientGraphs"]


@dataclass(frozen=True)
class GradientGraphs:
    """The differentiable aliases of θ, each batch's loss, the autograd edges of every batch's gradient pieces
    that depend on θ (with the index of their parameter; batch ``b``'s are ``edges[edge_ends[b - 1]:
    edge_ends[b]]``) and, if asked for, each batch's flat gradient.
    """

    leaves: tuple[Tensor, ...]
    losses: list[Tensor]
    edges: list[GradientEdge]
    tangent_indices: list[int]
    edge_ends: list[int]
    gradients: list[Tensor] | None

    @classmethod
    def build(
        cls,
        point: dict[str, Tensor],
        num_batches: int,
        loss_of: Callable[[dict[str, Tensor], int], Tensor],
        flatten: Callable[[list[Tensor]], Tensor],
        keep_gradient: bool = False,
    ) -> GradientGraphs:
        """Per batch ``index < num_batches`` the gradient of ``loss_of(params, index)`` at ``point``, built with
        ``create_graph=True`` and kept as edges; with ``keep_gradient=True`` each batch's gradient, flattened by
        ``flatten``, is kept as well.
        """
        # Aliases of the point (no new memory) that autograd can differentiate; shared by all batches.
        leaves = {key: p.detach().requires_grad_(True) for key, p in point.items()}
        losses, edges, tangent_indices, edge_ends = [], [], [], []
        gradients: list[Tensor] | None = [] if keep_gradient else None
        with torch.enable_grad():
            for index in range(num_batches):
                loss = loss_of(leaves, index)
                grads = torch.autograd.grad(
                    loss, tuple(leaves.values()), create_graph=True, materialize_grads=True
                )
                losses.append(loss.detach())
                if gradients is not None:
                    gradients.append(flatten([g.detach() for g in grads]))
                for position, g in enumerate(grads):
                    if g.requires_grad:  # a gradient that does not depend on θ adds nothing to H v
                        edges.append(get_gradient_edge(g))
                        tangent_indices.append(position)
                edge_ends.append(len(edges))
                del grads
        return cls(tuple(leaves.values()), losses, edges, tangent_indices, edge_ends, gradients)

    def product(
        self, tangent: tuple[Tensor, ...], retain_graph: bool, batch: int | None = None
    ) -> list[Tensor] | None:
        """``Σ_b H_b v`` (or ``H_batch v``) per parameter for ``v`` given per parameter (``tangent``), by one
        backward pass through the kept gradients of those batches; ``None`` when none of them depends on θ
        (the Hessian is zero). ``retain_graph=False`` consumes the graphs.
        """
        ends = self.edge_ends
        first, end = (0, ends[-1]) if batch is None else (ends[batch - 1] if batch else 0, ends[batch])
        if first == end:
            return None
        with torch.enable_grad():
            return list(
                torch.autograd.grad(
                    self.edges[first:end],
                    self.leaves,
                    [tangent[i] for i in self.tangent_indices[first:end]],
                    retain_graph=retain_graph,
                    materialize_grads=True,
                )
            )
