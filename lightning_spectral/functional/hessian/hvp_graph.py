"""Hessian-vector products replayed as CUDA graphs, captured once and reused by every later operator of the same
shape.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from lightning_spectral._internal.full_precision import _matmul_precision, precision_switches
from lightning_spectral._internal.rng import capture_rng_state
from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.hessian.replayed_randomness import NoReplay

if TYPE_CHECKING:
    from lightning_spectral.functional.hessian.operator import HessianOperator, HVPMethod

__all__ = ["HVPGraph"]


@dataclass
class _Capture:
    """One captured product: the operator twin whose tensors are the static inputs, the graph and its output."""

    method: HVPMethod
    twin: HessianOperator
    static_inputs: list[Tensor]
    static_v: Tensor
    static_out: Tensor
    graph: Any  # torch.cuda.CUDAGraph
    model: weakref.ref[nn.Module]
    loss_fn: Any
    loaded_for: weakref.ref[HessianOperator] | None = None


def _describe_leaf(leaf: Any) -> tuple[Any, ...]:
    if isinstance(leaf, Tensor):
        return ("tensor", tuple(leaf.shape), leaf.dtype, leaf.device)
    return ("value", type(leaf).__qualname__, repr(leaf))


def _precision_settings() -> tuple[Any, ...]:
    """The global switches that change which kernels a product runs."""
    switches = precision_switches()
    legacy = () if switches else (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    cudnn = torch.backends.cudnn
    return (
        _matmul_precision(),
        tuple(switch.fp32_precision for switch in switches),
        legacy,
        cudnn.enabled,
        cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        _autocast_enabled(),
    )


def _autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled()


def _tensors_of(operator: HessianOperator) -> tuple[list[Tensor], Any]:
    """The operator's inputs a capture copies: point, frozen parameters, buffers, then the batches' tensors
    (and the batches' structure).
    """
    leaves, spec = tree_flatten(operator._batches)
    tensors = [*operator._point.values(), *operator._constants.values(), *operator._buffers.values()]
    return tensors + [leaf for leaf in leaves if isinstance(leaf, Tensor)], (leaves, spec)


def _signature(operator: HessianOperator) -> tuple[Any, ...]:
    """What a capture must match: the operator's structure (computed once per operator) and the state that can
    change between its products (train/eval flags, precision settings).
    """
    structure = operator.__dict__.get("_graph_structure")
    if structure is None:
        leaves, spec = tree_flatten(operator._batches)

        def shapes(tensors: dict[str, Tensor]) -> tuple[Any, ...]:
            return tuple((name, tuple(t.shape), t.dtype, t.device) for name, t in tensors.items())

        structure = (
            id(operator._module.model),
            id(operator._module._loss_fn[0]),
            shapes(operator._point),
            shapes(operator._constants),
            shapes(operator._buffers),
            repr(spec),
            tuple(_describe_leaf(leaf) for leaf in leaves),
            operator._recurrent,
        )
        operator._graph_structure = structure
    model = operator._module.model
    return structure + (tuple(module.training for module in model.modules()), _precision_settings())


def _reset_generator_after_failed_capture(device: torch.device) -> None:
    """A capture registers the default CUDA generator and marks its state as capturing; a capture that fails
    ends without unmarking it (torch 2.11-2.13), after which every eager random draw on that device (dropout in
    the next training step) raises "Offset increment outside graph capture". A clone of the state is unmarked:
    put it in place (the seed and offset are restored by the caller).
    """
    generator = torch.cuda.default_generators[
        device.index if device.index is not None else torch.cuda.current_device()
    ]
    if hasattr(generator, "graphsafe_set_state") and hasattr(generator, "clone_state"):
        generator.graphsafe_set_state(generator.clone_state())


class HVPGraph:
    """A cache of Hessian-vector products captured as CUDA graphs (see the docs' implementation notes).

    Pass one to :class:`~lightning_spectral.functional.HessianOperator` (``hvp_graph=``) and the operator to the
    estimators (``hessian_eigenvalues(operator=...)``, ``hessian_trace``, ``hessian_density``), or let
    :class:`~lightning_spectral.callbacks.HessianEigenMonitor` keep one (``cuda_graphs=True``). Products of
    operators on other devices than CUDA are never captured.

    Args:
        max_graphs: how many captures (signatures) to keep, ``>= 1`` (default 2: e.g. the eval-mode and the
            train-mode loss of a monitor).

    Attributes:
        num_captures: captures taken so far.
        num_replays: products served by a replay.
        disabled: signature → why it is answered with eager products (the reasons also go to a warning).

    Raises:
        ValueError: ``max_graphs`` is not a positive integer.

    Example::

        graph = HVPGraph()  # model and batch on a CUDA device (graphs capture CUDA work only)
        op = HessianOperator(model, loss_fn, batch, method="double_backward", hvp_graph=graph)
        result = hessian_eigenvalues(operator=op, k=3)  # the products after the first replay one capture
        graph.num_captures, graph.num_replays
    """

    def __init__(self, max_graphs: int = 2) -> None:
        self.max_graphs = check_int("max_graphs", max_graphs, 1)
        self.num_captures = 0
        self.num_replays = 0
        self.disabled: dict[tuple[Any, ...], str] = {}
        self._captures: OrderedDict[tuple[Any, ...], _Capture] = OrderedDict()

    def release(self) -> None:
        """Drop every capture (static tensors and graph memory); later products capture again."""
        self._captures.clear()

    # ------------------------------------------------------------------ used by HessianOperator
    def resolved_method(self, operator: HessianOperator) -> HVPMethod | None:
        """The HVP method a capture of this operator's signature resolved ``"auto"`` to, if there is one.

        Args:
            operator: the operator asking.

        Returns:
            The method, or ``None`` without such a capture.
        """
        capture = self._captures.get(_signature(operator))
        return None if capture is None else capture.method

    def product(self, operator: HessianOperator, v: Tensor) -> Tensor | None:
        """``Σ_b H_b v`` (not yet averaged or reduced) by a replay, or ``None`` if this operator's products must
        be eager: not on CUDA, ``"auto"`` not resolved yet, or the signature disabled.

        Args:
            operator: the operator whose product is asked for.
            v: ``(P,)`` vector.

        Returns:
            ``(P,)`` the summed product, or ``None``.
        """
        if operator.device.type != "cuda" or operator.method == "auto":
            return None
        signature = _signature(operator)
        if signature in self.disabled:
            return None
        capture = self._captures.get(signature)
        if capture is not None and (
            capture.method != operator.method or not self._same_objects(capture, operator)
        ):
            capture = None
        if capture is None:
            capture = self._capture(operator, signature)
            if capture is None:
                return None
        self._captures.move_to_end(signature)
        if capture.loaded_for is None or capture.loaded_for() is not operator:
            tensors, _ = _tensors_of(operator)
            with torch.no_grad():
                for static, tensor in zip(capture.static_inputs, tensors):
                    static.copy_(tensor)
            capture.loaded_for = weakref.ref(operator)
        capture.static_v.copy_(v)
        capture.graph.replay()
        self.num_replays += 1
        return capture.static_out.clone()

    # ------------------------------------------------------------------ capture
    @staticmethod
    def _same_objects(capture: _Capture, operator: HessianOperator) -> bool:
        return capture.model() is operator._module.model and capture.loss_fn is operator._module._loss_fn[0]

    def _disable(self, signature: tuple[Any, ...], reason: str) -> None:
        self.disabled[signature] = reason
        warnings.warn(
            f"HVPGraph: Hessian-vector products of this loss are not replayed as a CUDA graph ({reason}); they are "
            "computed eagerly (same numbers, no speed-up).",
            stacklevel=4,
        )

    def _capture(self, operator: HessianOperator, signature: tuple[Any, ...]) -> _Capture | None:
        device = operator.device
        tensors, (leaves, spec) = _tensors_of(operator)
        with torch.no_grad():
            static_inputs = [t.detach().clone() for t in tensors]
        point_keys = list(operator._point)
        constant_keys = list(operator._constants)
        buffer_keys = list(operator._buffers)
        statics = iter(static_inputs)
        twin = copy.copy(operator)
        twin._point = {key: next(statics) for key in point_keys}
        twin._constants = {key: next(statics) for key in constant_keys}
        twin._buffers = {key: next(statics) for key in buffer_keys}
        twin._batches = tree_unflatten(
            [next(statics) if isinstance(leaf, Tensor) else leaf for leaf in leaves], spec
        )
        twin._randomness = NoReplay()
        twin._graphs = None
        twin._reduce = None
        twin._hvp_graph = None
        # a generic vector for the warm-up and the check, from a generator of its own (the global RNG is not drawn)
        generator = torch.Generator().manual_seed(0)
        static_v = torch.randn(operator.dim, generator=generator, dtype=operator.dtype).to(device)

        rng_state = capture_rng_state(device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        try:
            with torch.cuda.stream(stream):
                eager = twin._hvp_unshared(static_v)
                if not capture_rng_state(device).same_torch_state(rng_state):
                    self._disable(signature, "the loss draws random numbers, e.g. dropout in train mode")
                    return None
                eager = twin._hvp_unshared(static_v)  # a second warm-up: lazy initializations on this stream
            torch.cuda.current_stream(device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
                static_out = twin._hvp_unshared(static_v)
            graph.replay()
            difference = float(torch.linalg.vector_norm(static_out - eager))
            scale = float(torch.linalg.vector_norm(eager))
        except (RuntimeError, NotImplementedError) as error:  # torch.AcceleratorError is a RuntimeError
            _reset_generator_after_failed_capture(device)
            first_line = str(error).splitlines()[0] if str(error) else ""
            self._disable(signature, f"capture failed: {type(error).__name__}: {first_line}")
            return None
        finally:
            rng_state.restore()
        if not difference <= 100 * torch.finfo(operator.dtype).eps * scale:
            self._disable(signature, f"the replay differs from the eager product by {difference / scale:.1e}")
            return None
        self.num_captures += 1
        capture = _Capture(
            method=operator.method,
            twin=twin,
            static_inputs=static_inputs,
            static_v=static_v,
            static_out=static_out,
            graph=graph,
            model=weakref.ref(operator._module.model),
            loss_fn=operator._module._loss_fn[0],
        )
        self._captures[signature] = capture
        while len(self._captures) > self.max_graphs:
            self._captures.popitem(last=False)
        return capture
