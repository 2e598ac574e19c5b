"""The loss Hessian of a model as a symmetric linear operator on the flat parameter vector.

For a loss ``L(θ) = loss_fn(model, batch)`` over the selected parameters ``θ ∈ R^P`` (flattened in
``named_parameters()`` order), :class:`HessianOperator` applies ``H v = ∇²L(θ) v`` exactly, never forming
``H``. With several batches it is the average ``H = (1/N) Σ_b ∇²L_b(θ)`` (one HVP per batch per product),
the more faithful full-batch curvature.

Two exact ways to compute ``H v``:

- ``"forward_over_reverse"``: ``H v = J_{∇L}(θ) v``, the forward-mode derivative (``torch.func.jvp``) of
  the reverse-mode gradient (``torch.func.grad``); one pass of each per product, nothing kept in between.
- ``"double_backward"``: ``H v = ∇_θ (∇L(θ) · v)``: the gradient graph is built once with
  ``create_graph=True`` and every product is one more backward pass through it (the graph is kept while
  the operator lives; drop the operator to free it).

``"auto"`` is double backward: with the first-order graph cached it is the fastest exact product (measured
on a 2-core CPU, a 3-layer tanh MLP of 85k parameters, batch 512: 7.1 ms per product against 15.7 ms for
forward-over-reverse and 3.7 ms for one plain gradient), and it works for every model autograd handles,
BatchNorm in train mode included. ``torch.func``'s forward-over-reverse also fails on
``torch.nn.functional.mse_loss`` in torch 2.13 ("ZeroTensors are immutable"). Choose
``"forward_over_reverse"`` to keep no graph alive between products (lower memory between products, about
twice the time).

The operator never modifies the model: the loss is evaluated through :func:`torch.func.functional_call`
on detached copies of the selected parameters and of every buffer, so ``.grad``, ``requires_grad`` flags
and BatchNorm running statistics are untouched. Unselected parameters (frozen ones by default) are
constants.

Example::

    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> loss_fn = lambda m, batch: torch.nn.functional.mse_loss(m(batch[0]), batch[1])
    >>> op = HessianOperator(model, loss_fn, (x, y))
    >>> op.dim, op.matvec(torch.ones(op.dim)).shape
    (4, torch.Size([4]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral.functional.model_jacobian import ParamSpec, select_parameters

LossFn = Callable[[nn.Module, Any], Tensor]
HVP_METHODS = ("auto", "forward_over_reverse", "double_backward")


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``, so functional_call can swap the model's tensors in it."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Tensor:
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"`loss_fn` must return a scalar tensor, got {type(loss).__name__}.")
        return loss.reshape(())


class HessianOperator:
    """``v ↦ ∇²L(θ) v`` for ``L = loss_fn(model, batch)`` (averaged over batches, see :meth:`from_batches`).

    Args:
        model: the network (left untouched).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
        batch: one batch, passed to ``loss_fn`` as it is (a tuple ``(x, y)`` is one batch).
        params: names / globs / module prefixes of the parameters to differentiate (default: every
            parameter with ``requires_grad=True``).
        method: ``"auto"``, ``"forward_over_reverse"`` or ``"double_backward"`` (module docstring).
        reduce_fn: applied to every product (and gradient) before it is returned, e.g. an all-reduce mean
            across processes; default: none.

    Attributes:
        dim: ``P``, the number of selected scalar parameters.
        names: the selected parameter names, in flattening order.
        num_matvecs: products computed so far.
        method: the HVP method in use (``"auto"`` resolves to ``"double_backward"``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        *,
        params: ParamSpec = None,
        method: str = "auto",
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self._init(model, loss_fn, [batch], params, method, reduce_fn)

    @classmethod
    def from_batches(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Any],
        *,
        params: ParamSpec = None,
        method: str = "auto",
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
    ) -> HessianOperator:
        """The average Hessian ``(1/N) Σ_b ∇²L_b`` over ``batches`` (a list of batches)."""
        if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence) or len(batches) == 0:
            raise ValueError("`batches` must be a non-empty list of batches.")
        op = cls.__new__(cls)
        op._init(model, loss_fn, list(batches), params, method, reduce_fn)
        return op

    def _init(self, model, loss_fn, batches, params, method, reduce_fn) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if not callable(loss_fn):
            raise ValueError(f"`loss_fn` must be callable, got {loss_fn!r}.")
        if method not in HVP_METHODS:
            raise ValueError(f"`method` must be one of {HVP_METHODS}, got {method!r}.")
        if reduce_fn is not None and not callable(reduce_fn):
            raise ValueError(f"`reduce_fn` must be callable or None, got {reduce_fn!r}.")
        self._module = _LossModule(model, loss_fn)
        selected = select_parameters(model, params)
        self.names = tuple(selected)
        self._params = {f"model.{name}": tensor.detach() for name, tensor in selected.items()}
        self._shapes = [p.shape for p in self._params.values()]
        self._numels = [p.numel() for p in self._params.values()]
        first = next(iter(self._params.values()))
        self.dim = sum(self._numels)
        self.dtype, self.device = first.dtype, first.device
        self._batches = batches
        self._reduce = reduce_fn or (lambda t: t)
        self.method = "double_backward" if method == "auto" else method
        self.num_matvecs = 0
        self._gradient_graphs: list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] | None = None

    # ------------------------------------------------------------------ plumbing
    def _buffers(self) -> dict[str, Tensor]:
        return {f"model.{name}": b.detach().clone() for name, b in self._module.model.named_buffers()}

    def _loss(self, params: dict[str, Tensor], batch: Any) -> Tensor:
        return torch.func.functional_call(self._module, {**params, **self._buffers()}, (batch,), strict=False)

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        pieces = torch.split(flat, self._numels)
        return {name: piece.view(shape) for name, piece, shape in zip(self._params, pieces, self._shapes)}

    def _check_vector(self, v: Tensor) -> None:
        if not isinstance(v, Tensor) or v.shape != (self.dim,):
            raise ValueError(
                f"`v` must be a 1-D tensor of length {self.dim}, got {getattr(v, 'shape', v)!r}."
            )

    # ------------------------------------------------------------------ products
    def _hvp_forward_over_reverse(self, v: Tensor) -> Tensor:
        tangent = self._unflatten(v)
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for batch in self._batches:
            grad_fn = torch.func.grad(lambda p, b=batch: self._loss(p, b))
            _, hv = torch.func.jvp(grad_fn, (self._params,), (tangent,))
            total += torch.cat([hv[name].reshape(-1) for name in self._params])
        return total

    def _graphs(self) -> list[tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]:
        if self._gradient_graphs is None:
            graphs = []
            with torch.enable_grad():
                for batch in self._batches:
                    leaves = {name: p.clone().requires_grad_(True) for name, p in self._params.items()}
                    loss = self._loss(leaves, batch)
                    grads = torch.autograd.grad(
                        loss, tuple(leaves.values()), create_graph=True, allow_unused=True
                    )
                    grads = tuple(
                        torch.zeros_like(p) if g is None else g for g, p in zip(grads, leaves.values())
                    )
                    graphs.append((tuple(leaves.values()), grads))
            self._gradient_graphs = graphs
        return self._gradient_graphs

    def _hvp_double_backward(self, v: Tensor) -> Tensor:
        tangent = list(self._unflatten(v).values())
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        with torch.enable_grad():
            for leaves, grads in self._graphs():
                dot = sum((g * t).sum() for g, t in zip(grads, tangent) if g.requires_grad)
                if not isinstance(dot, Tensor) or not dot.requires_grad:
                    continue  # the gradient does not depend on θ: this batch's Hessian is zero
                hv = torch.autograd.grad(dot, leaves, retain_graph=True, allow_unused=True)
                total += torch.cat(
                    [(torch.zeros_like(p) if h is None else h).reshape(-1) for h, p in zip(hv, leaves)]
                )
        return total

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for a flat ``v`` of length :attr:`dim` (same dtype and device as the parameters)."""
        self._check_vector(v)
        v = v.detach()
        if self.method == "forward_over_reverse":
            result = self._hvp_forward_over_reverse(v)
        else:
            result = self._hvp_double_backward(v)
        self.num_matvecs += 1
        return self._reduce(result / len(self._batches)).detach()

    __call__ = matvec

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """The (batch-averaged) loss and its flat gradient ``∇L(θ)`` (reduced like the products)."""
        losses, gradients = [], []
        with torch.enable_grad():
            for batch in self._batches:
                leaves = {name: p.clone().requires_grad_(True) for name, p in self._params.items()}
                loss = self._loss(leaves, batch)
                grads = torch.autograd.grad(loss, tuple(leaves.values()), allow_unused=True)
                losses.append(loss.detach())
                gradients.append(
                    torch.cat(
                        [
                            (torch.zeros_like(p) if g is None else g).reshape(-1)
                            for g, p in zip(grads, leaves.values())
                        ]
                    )
                )
        loss = self._reduce(torch.stack(losses).mean().reshape(1))[0]
        return float(loss), self._reduce(torch.stack(gradients).mean(dim=0)).detach()

    def to_dense(self) -> Tensor:
        """The full ``P × P`` Hessian, column by column (``P`` products): for tiny models and tests."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)
