"""The loss Hessian of a model as a symmetric linear operator on the flat vector of its parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_spectral._internal.differentiable_kernels import differentiable_kernels, has_recurrent_layers
from lightning_spectral._internal.eager_execution import compiled_code_runs_eagerly
from lightning_spectral._internal.validation import check_bool, check_callable, check_choice, check_int
from lightning_spectral.functional._common.parameter_selection import (
    ParameterLayout,
    ParamSpec,
    select_parameters,
)
from lightning_spectral.functional.hessian.gradient_graphs import GradientGraphs
from lightning_spectral.functional.hessian.hvp_graph import HVPGraph
from lightning_spectral.functional.hessian.replayed_randomness import NoReplay, ReplayedRandomness

LossFn = Callable[[nn.Module, Any], Tensor]
#: How a Hessian-vector product is computed (``"auto"``: forward-over-reverse, else double backward).
HVPMethod = Literal["auto", "forward_over_reverse", "double_backward"]
HVP_METHODS: tuple[HVPMethod, ...] = get_args(HVPMethod)
#: The HVP method of the estimators that take many products (eigenvalues, trace, density, batch sharpness)
#: when none is given: each product is one backward pass through the kept gradient graph.
SOLVER_HVP_METHOD: HVPMethod = "double_backward"
# What torch.func raises for a loss it cannot transform; "auto" falls back on these and only these.
_TRANSFORM_ERRORS = (RuntimeError, NotImplementedError)

__all__ = ["HVP_METHODS", "HVPMethod", "HessianOperator", "LossFn"]


def checked_vector(v: object, dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``v`` detached, after checking it is a ``(dim,)`` tensor of ``dtype`` on ``device`` (``ValueError``)."""
    if not isinstance(v, Tensor) or v.shape != (dim,):
        shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
        raise ValueError(f"`v` must be a 1-D tensor of length dim = {dim}, got {shape}.")
    if v.dtype != dtype or v.device != device:
        raise ValueError(
            f"`v` must have the parameters' dtype {dtype} on {device}, got {v.dtype} on {v.device}."
        )
    return v.detach()


class _LossOfModel(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: functional_call swaps the model's tensors for the call."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self._loss_fn = (loss_fn,)  # a tuple: a loss_fn that is an nn.Module is not registered as a child

    @override
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
        model: the network; never modified (see the docs' implementation notes).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``, called with ``model`` itself while its
            parameters and buffers are temporarily replaced by the operator's copies
            (:func:`torch.func.functional_call`).
        batch: one batch, passed to ``loss_fn`` as it is: a tuple ``(x, y)`` is one batch. Several batches go
            through :meth:`from_batches`. The batch must already be on the model's device.
        params: which parameters to differentiate (see
            :func:`~lightning_spectral.functional._common.parameter_selection.select_parameters`): names, globs or
            module prefixes; default every parameter with ``requires_grad=True`` (frozen ones excluded).
            The selected parameters must share one dtype and device.
        method: ``"auto"``, ``"forward_over_reverse"`` or ``"double_backward"`` (see the docs' implementation notes).
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

    Raises:
        TypeError: an argument of the wrong type (``model`` not a module, ``loss_fn`` or ``reduce_fn`` not
        callable, ...), or a loss that is not a scalar tensor.
        ValueError: ``method`` is not one of the methods, or ``params`` selects no parameter (or parameters of
            several dtypes or devices).

    Example:
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

    #: The operator's structure, set by :mod:`~lightning_spectral.functional.hessian.hvp_graph` once it is known.
    _graph_structure: tuple[Any, ...]

    shard_sum = None

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: Any,
        *,
        params: ParamSpec = None,
        method: HVPMethod = "auto",
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
        method: HVPMethod = "auto",
        reduce_fn: Callable[[Tensor], Tensor] | None = None,
        copy_params: bool = True,
        hvp_graph: HVPGraph | None = None,
    ) -> HessianOperator:
        """The average Hessian ``(1/N) Σ_b ∇²L_b(θ)`` over ``batches``, a non-empty ``list`` of batches.

        Only a ``list`` is accepted, so that one batch ``(x, y)`` (a tuple) is never read as two batches.

        Args:
            model: the network, as in :class:`HessianOperator`.
            loss_fn: ``loss_fn(model, batch) -> scalar tensor``.
            batches: the batches, each passed to ``loss_fn`` as it is.
            params: which parameters to differentiate, as in :class:`HessianOperator`.
            method: the HVP method, as in :class:`HessianOperator`.
            reduce_fn: applied to every product, loss and gradient, as in :class:`HessianOperator`.
            copy_params: whether the operator keeps copies of the parameters.
            hvp_graph: an optional :class:`~lightning_spectral.functional.HVPGraph`.

        Returns:
            The operator of the batch-averaged Hessian.

        Raises:
            TypeError: ``batches`` is not a list.
            ValueError: ``batches`` is empty (and as :class:`HessianOperator`).

        Example::

            op = HessianOperator.from_batches(model, loss_fn, [batch_1, batch_2])
            op.num_batches  # 2
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
        method: HVPMethod,
        reduce_fn: Callable[[Tensor], Tensor] | None,
        copy_params: bool,
        hvp_graph: HVPGraph | None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
        if not callable(loss_fn):
            raise TypeError(f"`loss_fn` must be callable as loss_fn(model, batch), got {loss_fn!r}.")
        check_choice("method", method, HVP_METHODS)
        check_callable("reduce_fn", reduce_fn)
        check_bool("copy_params", copy_params)
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
        self._randomness: ReplayedRandomness | NoReplay = ReplayedRandomness(self.device, self.num_batches)
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
                hv = torch.func.jvp(gradient_fn, (self._point,), (tangent,))[1]  # (primal out, tangent out)
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
        product) each batch's flat gradient too.
        """
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
        its gradient graph and consumes it): what a CUDA graph captures.
        """
        if self.method == "forward_over_reverse":
            return self._hvp_forward_over_reverse(v)
        return self._product_through(self._build_gradient_graphs(keep_gradient=False), v, retain_graph=False)

    # ------------------------------------------------------------------ public API
    def _checked(self, v: Tensor) -> Tensor:
        return checked_vector(v, self.dim, self.dtype, self.device)

    def _eager_product(self, v: Tensor, batch: int | None) -> Tensor:
        """``Σ_b H_b v`` (``batch=None``) or ``H_batch v``, unscaled, by the method in use (``"auto"`` resolved
        here on the first product).
        """
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
        """``H v`` for a 1-D ``v`` of length :attr:`dim` with the operator's dtype and device.

        Args:
            v: ``(P,)`` vector.

        Returns:
            ``(P,)`` the product ``H v``.

        Raises:
            ValueError: ``v`` has the wrong shape, dtype or device, or is not finite.
        """
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
        handed out, not kept); otherwise one more gradient evaluation per batch.
        """
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
        evaluation, because the graphs keep no gradient values.

        Returns:
            ``(loss, gradient)``: a float and a ``(P,)`` tensor.
        """
        losses, gradients = self._losses_and_gradients()
        loss = self._finish(torch.stack(losses).sum().reshape(1))
        return float(loss[0]), self._finish(sum(gradients[1:], gradients[0]))

    def batch_gradients(self) -> list[Tensor]:
        """Each batch's own flat gradient ``∇L_b(θ)`` (through ``reduce_fn``, not averaged over the batches),
        at the same cost as :meth:`loss_and_gradient`: free before the first double-backward product.

        Returns:
            One ``(P,)`` tensor per batch.
        """
        return [self._reduced(gradient) for gradient in self._losses_and_gradients()[1]]

    def batch_matvec(self, batch: int, v: Tensor) -> Tensor:
        """``∇²L_b(θ) v``, the Hessian of batch ``b = batch`` alone (through ``reduce_fn``): with double backward
        a backward pass through that batch's kept gradient graph only. Counted in :attr:`num_batch_matvecs`,
        not :attr:`num_matvecs`; never replayed from a CUDA graph.

        Args:
            batch: the batch's index in ``[0, num_batches)``.
            v: ``(P,)`` vector.

        Returns:
            ``(P,)`` the product ``∇²L_b(θ) v``.

        Raises:
            ValueError: ``batch`` out of range, or a bad ``v`` (as :meth:`matvec`).
        """
        check_int("batch", batch, 0, maximum=self.num_batches - 1)
        result = self._eager_product(self._checked(v), batch)
        self.num_batch_matvecs += 1
        return self._reduced(result)

    def to_dense(self) -> Tensor:
        """The ``P × P`` Hessian, column ``i`` being ``H e_i`` (``P`` products): for small models and tests.

        Returns:
            ``(P, P)`` tensor.
        """
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)
