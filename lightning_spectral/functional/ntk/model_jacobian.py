"""A model's outputs as a pure function of (a subset of) its parameters: the plumbing of the NTK estimators.

Example::

    >>> import torch
    >>> model = torch.nn.Linear(3, 2)
    >>> fm = make_functional_model(model, output_fn=None, params=None)
    >>> fm.names
    ('weight', 'bias')
    >>> fm.batch_outputs(fm.params, torch.randn(5, 3)).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_spectral._internal.differentiable_kernels import differentiable_kernels, has_recurrent_layers
from lightning_spectral._internal.eager_execution import compiled_code_runs_eagerly
from lightning_spectral.functional._common.model_io import model_logits
from lightning_spectral.functional._common.parameter_selection import (
    ParamSpec,
    select_parameters,
)

OutputFn = Callable[[nn.Module, Tensor], Tensor]

__all__ = [
    "FunctionalModel",
    "OutputFn",
    "ParamSpec",
    "FORWARD_MODE_ERRORS",
    "check_examples_independent",
    "make_functional_model",
    "ntk_products",
    "push_forward_by_reverse_mode",
    "validate_inputs",
    "warn_per_example_loop",
]


def _default_output_fn(model: nn.Module, inputs: Tensor) -> Tensor:
    return model_logits(model(inputs), inputs.shape[0])


class _OutputModule(nn.Module):
    """Wraps ``output_fn(model, x)`` so that functional_call can swap the parameters of ``model`` in it."""

    def __init__(self, model: nn.Module, output_fn: OutputFn) -> None:
        super().__init__()
        self.model = model
        self.output_fn = output_fn

    @override
    def forward(self, inputs: Tensor) -> Tensor:
        return self.output_fn(self.model, inputs)


def check_examples_independent(model: nn.Module) -> None:
    """Raise ``ValueError`` if a module in ``model`` couples examples or is random: BatchNorm or dropout in
    training mode, or BatchNorm with ``track_running_stats=False`` (batch statistics even in eval mode).
    Call ``model.eval()`` first. Functional dropout / normalization inside ``forward`` cannot be detected.
    """
    offenders = []
    for name, module in model.named_modules():
        label = f"{name or type(model).__name__} ({type(module).__name__})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats:
            offenders.append(label + " without running statistics, normalizing by batch statistics")
        elif module.training and isinstance(
            module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
        ):
            offenders.append(label)
    if offenders:
        raise ValueError(
            "`model`: the NTK needs examples processed independently and deterministically, but these "
            f"modules are in training mode or couple examples: {', '.join(offenders[:5])}"
            + (" ..." if len(offenders) > 5 else "")
            + ". Call model.eval() first (BatchNorm in train mode couples the examples of a batch and "
            "updates its running statistics; dropout in train mode makes the outputs random)."
        )


def validate_inputs(inputs: Tensor) -> int:
    """Check ``inputs`` is a tensor with a non-empty leading batch dimension; return the batch size."""
    if not isinstance(inputs, Tensor):
        raise TypeError(
            f"`inputs` must be a torch.Tensor with a leading batch dimension, got {type(inputs)}."
        )
    if inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError(
            f"`inputs` must have a non-empty leading batch dimension, got shape {tuple(inputs.shape)}."
        )
    return int(inputs.shape[0])


@dataclass(frozen=True)
class FunctionalModel:
    """``f(θ; x)``: the outputs of ``output_fn(model, x)`` as a pure function of the selected parameters.

    ``params`` holds the current values (detached) of the parameters named in ``names``; the other
    parameters enter as constants (detached). ``batch_outputs`` flattens the outputs of a batch to
    ``(B, K)``; ``example_outputs`` evaluates one example (given without its batch dimension) as a batch of
    one and returns its ``K`` outputs.
    """

    module: _OutputModule
    names: tuple[str, ...]
    params: dict[str, Tensor]
    constants: dict[str, Tensor]
    recurrent: bool = (
        False  # the model has RNN layers (see lightning_spectral._internal.differentiable_kernels)
    )

    @property
    def num_params(self) -> int:
        """``P``, the number of scalar parameters the Jacobian is taken with respect to."""
        return sum(p.numel() for p in self.params.values())

    def _call(self, params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        state = {**self.constants, **{"model." + name: value for name, value in params.items()}}
        # no recompilation under the torch.func transforms; attention / RNN kernels with forward-mode derivatives
        with compiled_code_runs_eagerly(), differentiable_kernels(self.recurrent):
            out = torch.func.functional_call(self.module, state, (inputs,))
        if not isinstance(out, Tensor):
            raise TypeError(f"`output_fn` must return a Tensor, got {type(out)}.")
        if not out.is_floating_point():
            raise TypeError(f"`output_fn` must return a floating-point tensor, got dtype {out.dtype}.")
        return out

    def batch_outputs(self, params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        """Outputs of the batch ``inputs`` flattened to ``(B, K)``."""
        out = self._call(params, inputs)
        batch = inputs.shape[0]
        if out.dim() == 0 or out.shape[0] != batch:
            raise ValueError(
                f"`output_fn` must return a tensor whose first dimension is the batch size {batch}, "
                f"got shape {tuple(out.shape)}."
            )
        return out.reshape(batch, -1)

    def example_outputs(self, params: dict[str, Tensor], example: Tensor) -> Tensor:
        """The ``K`` outputs of one example (``example`` has no batch dimension)."""
        return self.batch_outputs(params, example.unsqueeze(0)).reshape(-1)


def make_functional_model(
    model: nn.Module, *, output_fn: OutputFn | None = None, params: ParamSpec = None
) -> FunctionalModel:
    """Build the :class:`FunctionalModel` of ``model`` (see the docs' implementation notes).

    ``output_fn(model, inputs)`` chooses the output (default ``model(inputs)``, reduced to its logits when it is
    a ``ModelOutput``, dict or tuple: :func:`~lightning_spectral.functional._common.model_io.model_logits`); ``params`` selects the
    parameters (see
    :func:`~lightning_spectral.functional._common.parameter_selection.select_parameters`). Raises ``ValueError`` for BatchNorm / dropout in train mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model)}.")
    if output_fn is not None and not callable(output_fn):
        raise TypeError(
            f"`output_fn` must be a callable (model, inputs) -> Tensor or None, got {output_fn!r}."
        )
    check_examples_independent(model)
    selected = {name: p.detach() for name, p in select_parameters(model, params).items()}
    constants = {"model." + name: p.detach() for name, p in model.named_parameters() if name not in selected}
    module = _OutputModule(model, output_fn if output_fn is not None else _default_output_fn)
    return FunctionalModel(
        module=module,
        names=tuple(selected),
        params=selected,
        constants=constants,
        recurrent=has_recurrent_layers(model),
    )


def ntk_products(
    fm: FunctionalModel, inputs: Tensor
) -> tuple[Tensor, Callable[[Tensor], dict[str, Tensor]], Callable[[Tensor], Tensor]]:
    """One forward pass of the batch, kept for reuse: returns ``(outputs, vjp, ntk_matvec)``.

    ``outputs`` is ``(B, K)``; ``vjp(v)`` maps ``v`` of shape ``(B, K)`` to ``Jᵀ v`` as ``{name: tensor}`` (a
    backward pass; callable many times); ``ntk_matvec(v)`` maps a flat ``v ∈ R^{B·K}`` (example-major) to
    ``Θ v = J (Jᵀ v)`` (a backward pass, then a forward-mode pass).
    """

    def batch_outputs(p: dict[str, Tensor]) -> Tensor:
        return fm.batch_outputs(p, inputs)

    try:
        # (torch annotates vjp's result as a 2- or, with has_aux, 3-tuple)
        outputs, vjp_fn = torch.func.vjp(batch_outputs, fm.params)[:2]
    except FORWARD_MODE_ERRORS:  # e.g. saved-tensor hooks (activation checkpointing): plain autograd
        outputs, vjp_fn = _vjp_by_autograd(batch_outputs, fm.params)
    reverse_push_forward: Callable[[dict[str, Tensor]], Tensor] | None = None

    def vjp(cotangent: Tensor) -> dict[str, Tensor]:
        return vjp_fn(cotangent.to(dtype=outputs.dtype, device=outputs.device))[0]

    def push_forward(tangent: dict[str, Tensor]) -> Tensor:
        nonlocal reverse_push_forward
        if reverse_push_forward is None:
            # the fused LSTM/GRU cells on CUDA, for one, have no forward-mode derivative
            try:
                return torch.func.jvp(batch_outputs, (fm.params,), (tangent,))[1]
            except FORWARD_MODE_ERRORS:
                reverse_push_forward = push_forward_by_reverse_mode(batch_outputs, fm.params, outputs)
        return reverse_push_forward(tangent)

    def ntk_matvec(vector: Tensor) -> Tensor:
        return push_forward(vjp(vector.reshape(outputs.shape))).reshape(-1)

    return outputs.detach(), vjp, ntk_matvec


#: What a torch.func transform raises for an operator it cannot handle (no forward-mode derivative, no batching
#: rule): the callers fall back to plain autograd.
FORWARD_MODE_ERRORS = (RuntimeError, NotImplementedError)


def _vjp_by_autograd(
    batch_outputs: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor]
) -> tuple[Tensor, Callable[[Tensor], tuple[dict[str, Tensor]]]]:
    """``(f(θ), u ↦ (Jᵀu,))`` like :func:`torch.func.vjp`, by plain autograd (the graph is kept between calls)."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    with torch.enable_grad():
        out = batch_outputs(leaves)

    def vjp_fn(cotangent: Tensor) -> tuple[dict[str, Tensor]]:
        with torch.enable_grad():
            grads = torch.autograd.grad(
                out, tuple(leaves.values()), cotangent, retain_graph=True, materialize_grads=True
            )
        return (dict(zip(leaves, (g.detach() for g in grads))),)

    return out.detach(), vjp_fn


def push_forward_by_reverse_mode(
    batch_outputs: Callable[[dict[str, Tensor]], Tensor], params: dict[str, Tensor], outputs: Tensor
) -> Callable[[dict[str, Tensor]], Tensor]:
    """``t ↦ J t`` by two reverse passes, for models whose operators lack forward-mode derivatives.

    ``g(u) = Jᵀ u`` is linear in ``u``, so ``J t = ∂/∂u ⟨g(u), t⟩``: build ``g`` once with ``create_graph=True``
    at ``u = 0`` and differentiate it with respect to ``u`` for every ``t`` (the graph is kept between products).
    """
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    with torch.enable_grad():
        out = batch_outputs(leaves)
        u = torch.zeros_like(out, requires_grad=True)
        pieces = torch.autograd.grad(
            out, tuple(leaves.values()), u, create_graph=True, materialize_grads=True
        )
    names = list(leaves)
    linked = [(names[i], g) for i, g in enumerate(pieces) if g.requires_grad]  # the others are zero

    def push_forward(tangent: dict[str, Tensor]) -> Tensor:
        if not linked:
            return torch.zeros_like(outputs)
        with torch.enable_grad():
            (result,) = torch.autograd.grad(
                [g for _, g in linked],
                u,
                [tangent[name] for name, _ in linked],
                retain_graph=True,
                materialize_grads=True,
            )
        return result.detach()

    return push_forward


def warn_per_example_loop(what: str, error: BaseException) -> None:
    """Say that ``what`` (per-example gradients or Jacobians) fell back from ``vmap`` over examples to a loop over
    them (Python's default warning filter shows an identical message once).
    """
    warnings.warn(
        f"{what}: torch.func.vmap cannot batch this model over examples "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); computing them with "
        "one autograd pass per example instead (same numbers, slower).",
        stacklevel=3,
    )
