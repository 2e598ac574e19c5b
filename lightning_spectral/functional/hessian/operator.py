"""The loss Hessian of a model as a symmetric linear operator on the flat vector of its parameters.

For ``L(θ) = loss_fn(model, batch)`` and the selected parameters ``θ ∈ R^P`` (flattened in
``named_parameters()`` order, see :mod:`~lightning_spectral.functional._common.parameter_selection`),
:class:`HessianOperator` applies ``v ↦ H v = ∇²L(θ) v`` exactly, without forming ``H``. Built with
:meth:`HessianOperator.from_batches` it is the average over batches ``H = (1/N) Σ_b ∇²L_b(θ)`` (one
Hessian-vector product per batch per product), the more faithful full-batch curvature.

Two exact Hessian-vector products (HVPs):

- ``"forward_over_reverse"``: ``H v = (d/dε) ∇L(θ + ε v) |_{ε=0}``, the forward-mode derivative
  (:func:`torch.func.jvp`) of the reverse-mode gradient (:func:`torch.func.grad`). Each product is one
  forward and one backward pass carrying tangents; nothing is kept between products.
- ``"double_backward"``: ``H v = ∇_θ (∇L(θ) · v)``. The gradient of every batch is built once with
  ``create_graph=True`` and kept (:mod:`~lightning_spectral.functional.hessian.gradient_graphs`); every product is then
  one more backward pass through those graphs (:meth:`HessianOperator.batch_matvec`: through one batch's). The
  price is memory: the graphs of all batches stay alive while the operator does (drop the operator to free
  them), about what one training step on all the batches together holds, and a bit more.
- ``"auto"`` (default) tries forward-over-reverse on the first product and falls back to double backward
  if :mod:`torch.func` cannot transform the loss (a ``RuntimeError`` or ``NotImplementedError`` from the
  transform); :attr:`HessianOperator.method` then says which one is in use and
  :attr:`HessianOperator.fallback_reason` why. Known cases that fall back: custom ``autograd.Function`` s
  without ``setup_context``, and ``torch.nn.functional.mse_loss`` (its forward-mode derivative fails with
  "ZeroTensors are immutable" in torch 2.13; ``((out - y) ** 2).mean()`` does not).

Speed. Measured on one CPU thread (torch 2.13): for a 3-layer tanh MLP (85k parameters, batch 512) a
gradient took 5.5 ms, a double-backward product 7.7 ms (13.7 ms for the first, which builds the graph) and a
forward-over-reverse product 17 ms; for a 2-layer CNN (10k parameters, batch 128) 16, 34 (53) and 55 ms.
Choose ``method="double_backward"`` when many products are taken and the memory is there.

Memory of a double-backward product, beyond the model and the batch: the graph of each batch's gradient
(the activations of a training step; the gradient values themselves are not kept, only the graph's
edges), the partial products autograd adds up inside the backward pass (for a layer reached by several
paths, two or three parameter-sized buffers at once), and the flat result; with ``copy_params=False``
measured at about 3 parameter-sized vectors above a step's activations for a 10⁷-parameter MLP
(``benchmarks/bench_scaling.py``); the default copy adds one. The product is taken as the vector-Jacobian
product of the kept gradient with ``v`` (``H v = J_{∇L}ᵀ v``, ``H`` symmetric), so no parameter-sized
``∇L ⊙ v`` is formed on the way.

What the operator never changes. It evaluates the loss through :func:`torch.func.functional_call` on
copies of the model's parameters and buffers taken at construction, so the operator is the Hessian at the
parameter values of that moment (a later optimizer step does not change it; with ``copy_params=False`` it
reads the model's own parameter storage instead, which saves one parameter-sized copy but lets an in-place
update of the model change the operator -- or, once a double-backward graph holds the old values, make the
next product raise autograd's "modified by an inplace operation" error: for operators used and dropped
before the model changes, as the functional helpers and the monitors do), ``.grad`` is never written
(only :func:`torch.autograd.grad` and :mod:`torch.func` are used), ``requires_grad`` flags and the train/eval
mode are left alone, and BatchNorm in train mode updates copies of its running statistics that are thrown
away. Unselected parameters (by default the frozen ones) are constants. Random layers (dropout in train
mode) are made deterministic: every evaluation of batch ``b`` replays the same global RNG state (the state at
construction for the first batch, the state the first evaluation of the previous batch left for the others),
and the global RNG is restored afterwards, so the operator is the Hessian of the loss with one fixed dropout
mask per batch and consumes no randomness. The CPU RNG and the RNG of the parameters' accelerator
(``torch.cuda`` etc.) are replayed.

Example::

    >>> import torch
    >>> model = torch.nn.Linear(3, 1)
    >>> x, y = torch.randn(8, 3), torch.randn(8, 1)
    >>> loss_fn = lambda m, batch: ((m(batch[0]) - batch[1]) ** 2).mean()
    >>> op = HessianOperator(model, loss_fn, (x, y))
    >>> op.dim, op.matvec(torch.ones(op.dim)).shape
    (4, torch.Size([4]))
    >>> bool(torch.allclose(op.to_dense(), op.to_dense().T, atol=1e-6)), op.method
    (True, 'forward_over_reverse')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral._internal.differentiable_kernels import differentiable_kernels, has_recurrent_layers
from lightning_spectral._internal.eager_execution import compiled_code_runs_eagerly
from lightning_spectral.functional._common.parameter_selection import (
    ParameterLayout,
    ParamSpec,
    select_parameters,
)
from lightning_spectral.functional.hessian.gradient_graphs import GradientGraphs
from lightning_spectral.functional.hessian.hvp_graph import HVPGraph
from lightning_spectral.functional.hessian.replayed_randomness import ReplayedRandomness

LossFn = Callable[[nn.Module, Any], Tensor]
HVP_METHODS = ("auto", "forward_over_reverse", "double_backward")
#: The HVP method of the estimators that take many products (eigenvalues, trace, density, batch sharpness)
#: when none is given: each product is one backward pass through the kept gradient graph.
SOLVER_HVP_METHOD = "double_backward"
# What torch.func raises for a loss it cannot transform; "auto" falls back on these and only these.
_TRANSFORM_ERRORS = (RuntimeError, NotImplementedError)

__all__ = ["HVP_METHODS", "HessianOperator", "LossFn"]


class _LossOfModel(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: functional_call swaps the model's tensors for the call."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = (loss_fn,)  # a tuple: a loss_fn that is an nn.Module is not registered as a child

    def forward(self, batch: Any) -> Tensor:
        loss = self._loss_fn[0](self.model, batch)
        if not isinstance(loss, Tensor):
            raise TypeError(f"`loss_fn` must return a scalar tensor, got {type(loss).__name__}.")
        if loss.numel() != 1 or not loss.is_floating_point():
            raise ValueError(
                f"`loss_fn` must return a floating-point scalar, got shape {tuple(loss.shape)} ({loss.dtype})."
            )
        return loss.reshape(())


class HessianOperator:
    """``v ↦ ∇²L(θ) v`` for ``L = loss_fn(model, batch)`` (averaged over batches with :meth:`from_batches`).

    Args:
        model: the network; never modified (module docstring).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``, called with ``model`` itself while its
            parameters and buffers are temporarily replaced by the operator's copies
            (:func:`torch.func.functional_call`).
        batch: one batch, passed to ``loss_fn`` as it is: a tuple ``(x, y)`` is one batch. Several batches go
            through :meth:`from_batches`. The batch must already be on the model's device.
        params: which parameters to differentiate (see
            :func:`~lightning_spectral.functional._common.parameter_selection.select_parameters`): names, globs or
            module prefixes; default every parameter with ``requires_grad=True`` (frozen ones excluded).
            The selected parameters must share one dtype and device.
        method: ``"auto"``, ``"forward_over_reverse"`` or ``"double_backward"`` (module docstring).
        reduce_fn: applied to every product (single-batch ones too) and to the losses and gradients
            (:meth:`loss_and_gradient`, :meth:`batch_gradients`) before they are returned, e.g. an all-reduce mean
            across processes; default none.
        copy_params: ``True`` (default): the operator keeps copies of the selected parameters taken at
            construction (later changes of the model do not reach it). ``False``: it reads the model's own
            parameter storage (no copy; an in-place update of the model, e.g. an optimizer step, changes the
            operator). Buffers are copied for every evaluation either way.
        hvp_graph: an :class:`~lightning_spectral.functional.HVPGraph`: on CUDA, products are replayed from a
            CUDA graph captured once and shared by every operator of the same structure
            (:mod:`~lightning_spectral.functional.hessian.hvp_graph`; the tensors are read at the first product).
            Default none: eager products.

    Attributes:
        dim: ``P``, the number of selected scalar parameters (the operator is ``P × P``).
        names: the selected parameter names, in flattening order.
        layout: the :class:`~lightning_spectral.functional._common.parameter_selection.ParameterLayout` of ``θ``.
        dtype, device: those of the selected parameters; vectors must match them.
        num_batches: ``N``, the number of batches averaged.
        method: the HVP method; ``"auto"`` until the first product, then the method in use.
        fallback_reason: why ``"auto"`` fell back to double backward (``None`` if it did not).
        num_matvecs: products computed so far.
        num_batch_matvecs: single-batch products (:meth:`batch_matvec`) computed so far.
        size: ``P`` as well (the operator's size; a sharded operator's :attr:`dim` is its shard's length).
        shard_sum: ``None``: the vectors are whole (see
            :class:`~lightning_spectral.functional.hessian.finite_difference.FiniteDifferenceHessian` for sharded ones).
    """

    shard_sum = None

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        *,
        params: ParamSpec = None,
        method: str = "auto",
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
        copy_params: bool = True,
        hvp_graph: HVPGraph | None = None,
    ) -> None:
        self._setup(model, loss_fn, [batch], params, method, reduce_fn, copy_params, hvp_graph)

    @classmethod
    def from_batches(
        cls,
        model: nn.Module,
        loss_fn: LossFn,
        batches: list[Any],
        *,
        params: ParamSpec = None,
        method: str = "auto",
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
        copy_params: bool = True,
        hvp_graph: HVPGraph | None = None,
    ) -> HessianOperator:
        """The average Hessian ``(1/N) Σ_b ∇²L_b(θ)`` over ``batches``, a non-empty ``list`` of batches.

        Only a ``list`` is accepted, so that one batch ``(x, y)`` (a tuple) is never read as two batches.
        """
        if not isinstance(batches, list):
            hint = " (one batch (x, y) goes to HessianOperator(...))" if isinstance(batches, tuple) else ""
            raise TypeError(f"`batches` must be a list of batches, got {type(batches).__name__}{hint}.")
        if not batches:
            raise ValueError("`batches` must hold at least one batch, got an empty list.")
        operator = cls.__new__(cls)
        operator._setup(model, loss_fn, list(batches), params, method, reduce_fn, copy_params, hvp_graph)
        return operator

    def _setup(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: list[Any],
        params: ParamSpec,
        method: str,
        reduce_fn: Callable[[Tensor], Tensor] | None,
        copy_params: bool,
        hvp_graph: HVPGraph | None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable as loss_fn(model, batch), got {loss_fn!r}.")
        if method not in HVP_METHODS:
            raise ValueError(f"`method` must be one of {HVP_METHODS}, got {method!r}.")
        if reduce_fn is not None and not callable(reduce_fn):
            raise TypeError(f"`reduce_fn` must be callable or None, got {reduce_fn!r}.")
        if not isinstance(copy_params, bool):
            raise TypeError(f"`copy_params` must be a bool, got {copy_params!r}.")
        if hvp_graph is not None and not isinstance(hvp_graph, HVPGraph):
            raise TypeError(f"`hvp_graph` must be an HVPGraph or None, got {type(hvp_graph).__name__}.")
        selected = select_parameters(model, params)
        self.layout = ParameterLayout.from_tensors(selected)
        self.names = self.layout.names
        self.dim = self.layout.dim
        self.size = self.dim
        self.dtype, self.device = self.layout.dtype, self.layout.device
        self.num_batches = len(batches)
        self.method = method
        self.fallback_reason: str | None = None
        self.num_matvecs = 0
        self.num_batch_matvecs = 0
        self._module = _LossOfModel(model, loss_fn)
        self._recurrent = has_recurrent_layers(model)
        self._batches = batches
        self._reduce = reduce_fn

        # Copies taken now (or aliases of the model's storage with copy_params=False): the operator is the
        # Hessian at these values, and nothing writes to the model's own tensors.
        def take(tensor: Tensor) -> Tensor:
            return tensor.detach().clone() if copy_params else tensor.detach()

        self._keys = tuple(f"model.{name}" for name in self.names)
        self._point = {f"model.{name}": take(p) for name, p in selected.items()}
        self._constants = {
            f"model.{name}": take(p) for name, p in model.named_parameters() if name not in selected
        }
        # Buffers are cloned again for every evaluation (BatchNorm in train mode writes them).
        self._buffers = {f"model.{name}": take(b) for name, b in model.named_buffers()}
        self._randomness = ReplayedRandomness(self.device, self.num_batches)
        self._graphs: GradientGraphs | None = None
        self._hvp_graph = hvp_graph

    # ------------------------------------------------------------------ evaluation
    def _loss(self, params: dict[str, Tensor], index: int) -> Tensor:
        """The loss of batch ``index`` at ``params``; the buffers are fresh copies (BatchNorm may write them)."""
        buffers = {name: b.clone() for name, b in self._buffers.items()}
        state = {**self._constants, **buffers, **params}
        # compiled models, fused attention and RNN kernels: second-order and forward-mode derivatives need eager
        # code and differentiable kernels
        with compiled_code_runs_eagerly(), differentiable_kernels(self._recurrent):
            return torch.func.functional_call(self._module, state, (self._batches[index],))

    def _reduced(self, tensor: Tensor) -> Tensor:
        tensor = tensor.detach()
        return tensor if self._reduce is None else self._reduce(tensor).detach()

    def _finish(self, total: Tensor) -> Tensor:
        """The batch average of a sum over batches that the operator owns (divided in place)."""
        total = total.detach()
        if self.num_batches > 1:
            total.div_(self.num_batches)
        return self._reduced(total)

    def _hvp_forward_over_reverse(self, v: Tensor, batch: int | None = None) -> Tensor:
        if batch is not None:  # its replayed random state is the one batch - 1's evaluation ended in
            with torch.no_grad():
                self._randomness.prime(batch, lambda index: self._loss(self._point, index))
        tangent = dict(zip(self._keys, self.layout.unflatten(v).values()))
        total: Tensor | None = None
        for index in range(self.num_batches) if batch is None else (batch,):
            gradient_fn = torch.func.grad(lambda p, i=index: self._loss(p, i))
            with self._randomness.replay(index):
                _, hv = torch.func.jvp(gradient_fn, (self._point,), (tangent,))
            flat = self.layout.flatten([hv.pop(key) for key in self._keys])
            total = flat if total is None else total.add_(flat)
        assert total is not None  # num_batches >= 1
        return total

    def _gradient_graphs(self, keep_gradient: bool = False) -> GradientGraphs:
        """Per batch the gradient built with ``create_graph=True``, cached for the operator's lifetime."""
        if self._graphs is None:
            self._graphs = self._build_gradient_graphs(keep_gradient)
        return self._graphs

    def _replayed_loss(self, params: dict[str, Tensor], index: int) -> Tensor:
        """The loss of batch ``index`` with its replayed randomness (the same dropout masks every time)."""
        with self._randomness.replay(index):
            return self._loss(params, index)

    def _build_gradient_graphs(self, keep_gradient: bool) -> GradientGraphs:
        """Per batch the gradient graph (:mod:`~lightning_spectral.functional.hessian.gradient_graphs`); with
        ``keep_gradient=True`` (asked by :meth:`loss_and_gradient` or :meth:`batch_gradients` before the first
        product) each batch's flat gradient too."""
        return GradientGraphs.build(
            self._point, self.num_batches, self._replayed_loss, self.layout.flatten, keep_gradient
        )

    def _product_through(
        self, graphs: GradientGraphs, v: Tensor, retain_graph: bool, batch: int | None = None
    ) -> Tensor:
        """``Σ_b H_b v`` (or ``H_batch v``) by one backward pass through the kept gradients of those batches."""
        hv = graphs.product(tuple(self.layout.unflatten(v).values()), retain_graph, batch)
        if hv is None:  # the gradient does not depend on θ: the Hessian is zero
            return torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        return self.layout.flatten(hv)

    def _hvp_double_backward(self, v: Tensor, batch: int | None = None) -> Tensor:
        return self._product_through(self._gradient_graphs(), v, retain_graph=True, batch=batch)

    def _hvp_unshared(self, v: Tensor) -> Tensor:
        """One product with the resolved method that keeps nothing for the next one (double backward builds
        its gradient graph and consumes it): what a CUDA graph captures."""
        if self.method == "forward_over_reverse":
            return self._hvp_forward_over_reverse(v)
        return self._product_through(self._build_gradient_graphs(keep_gradient=False), v, retain_graph=False)

    # ------------------------------------------------------------------ public API
    def _checked(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor) or v.shape != (self.dim,):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"`v` must be a 1-D tensor of length dim = {self.dim}, got {shape}.")
        if v.dtype != self.dtype or v.device != self.device:
            raise ValueError(
                f"`v` must have the parameters' dtype {self.dtype} on {self.device}, got {v.dtype} on {v.device}."
            )
        return v.detach()

    def _eager_product(self, v: Tensor, batch: int | None) -> Tensor:
        """``Σ_b H_b v`` (``batch=None``) or ``H_batch v``, unscaled, by the method in use (``"auto"`` resolved
        here on the first product)."""
        if self.method == "auto":
            try:
                result = self._hvp_forward_over_reverse(v, batch)
                self.method = "forward_over_reverse"
                return result
            except torch.OutOfMemoryError:
                raise  # not a transform failure; the cached graphs of double backward would need more
            except _TRANSFORM_ERRORS as error:
                self.method = "double_backward"
                self.fallback_reason = (
                    f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                )
        if self.method == "forward_over_reverse":
            return self._hvp_forward_over_reverse(v, batch)
        return self._hvp_double_backward(v, batch)

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` for a 1-D ``v`` of length :attr:`dim` with the operator's dtype and device."""
        v = self._checked(v)
        if self._hvp_graph is not None:
            if self.method == "auto":  # a capture of this loss already knows what "auto" resolves to
                self.method = self._hvp_graph.resolved_method(self) or "auto"
            replayed = self._hvp_graph.product(self, v)
            if replayed is not None:
                self.num_matvecs += 1
                return self._finish(replayed)
        result = self._eager_product(v, None)
        self.num_matvecs += 1
        return self._finish(result)

    __call__ = matvec

    def _losses_and_gradients(self) -> tuple[list[Tensor], list[Tensor]]:
        """Each batch's loss and flat gradient, before ``reduce_fn``. With double backward, asked for before the
        first product, they come with the gradient graphs the products use (no extra pass; the gradients are
        handed out, not kept); otherwise one more gradient evaluation per batch."""
        graphs = self._graphs
        if self.method == "double_backward" and (graphs is None or graphs.gradients is not None):
            graphs = self._gradient_graphs(keep_gradient=True)
            assert graphs.gradients is not None
            self._graphs = replace(graphs, gradients=None)  # a later call evaluates them again
            return graphs.losses, graphs.gradients
        losses, gradients = [], []
        leaves = {key: p.detach().requires_grad_(True) for key, p in self._point.items()}
        with torch.enable_grad():
            for index in range(self.num_batches):
                loss = self._replayed_loss(leaves, index)
                grads = torch.autograd.grad(loss, tuple(leaves.values()), materialize_grads=True)
                losses.append(loss.detach())
                gradients.append(self.layout.flatten(grads))
        return losses, gradients

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """The batch-averaged loss ``L(θ)`` and its flat gradient ``∇L(θ)`` (both passed through
        ``reduce_fn``). With double backward, called before the first product, it builds the gradient graphs
        the products use and keeps their gradient (no extra pass); called later it takes one more gradient
        evaluation, because the graphs keep no gradient values."""
        losses, gradients = self._losses_and_gradients()
        loss = self._finish(torch.stack(losses).sum().reshape(1))
        return float(loss[0]), self._finish(sum(gradients[1:], gradients[0]))

    def batch_gradients(self) -> list[Tensor]:
        """Each batch's own flat gradient ``∇L_b(θ)`` (through ``reduce_fn``, not averaged over the batches),
        at the same cost as :meth:`loss_and_gradient`: free before the first double-backward product."""
        return [self._reduced(gradient) for gradient in self._losses_and_gradients()[1]]

    def batch_matvec(self, batch: int, v: Tensor) -> Tensor:
        """``∇²L_b(θ) v``, the Hessian of batch ``b = batch`` alone (through ``reduce_fn``): with double backward
        a backward pass through that batch's kept gradient graph only. Counted in :attr:`num_batch_matvecs`,
        not :attr:`num_matvecs`; never replayed from a CUDA graph."""
        if isinstance(batch, bool) or not isinstance(batch, int) or not 0 <= batch < self.num_batches:
            raise ValueError(f"`batch` must be an int in [0, {self.num_batches}), got {batch!r}.")
        result = self._eager_product(self._checked(v), batch)
        self.num_batch_matvecs += 1
        return self._reduced(result)

    def to_dense(self) -> Tensor:
        """The ``P × P`` Hessian, column ``i`` being ``H e_i`` (``P`` products): for small models and tests."""
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)
