"""The NTK trace from output-space probes through the model's own backward: ``tr(J Jᵀ) = E_u ‖Jᵀu‖²``.

The derivation and design notes are on the docs site (implementation notes).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional._common.module_gradients import LocalShards, module_gradients
from lightning_spectral.functional._common.parameter_selection import ParamSpec
from lightning_spectral.functional.ntk.model_jacobian import (
    OutputFn,
    check_examples_independent,
    validate_inputs,
)
from lightning_spectral.functional.ntk.trace import NTKTrace
from lightning_spectral.linalg import mean_and_std_error, rademacher

__all__ = ["output_probe_trace"]


def _outputs(model: nn.Module, inputs: Tensor, output_fn: OutputFn | None) -> Tensor:
    if output_fn is None:
        from lightning_spectral.functional._common.model_io import model_logits

        out = model_logits(model(inputs), inputs.shape[0])
    else:
        out = output_fn(model, inputs)
    if not isinstance(out, Tensor) or not out.is_floating_point() or out.dim() == 0:
        raise TypeError("`output_fn` must return a floating-point tensor whose first dimension is the batch.")
    if out.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"`output_fn` must return a tensor whose first dimension is the batch size {inputs.shape[0]}, "
            f"got shape {tuple(out.shape)}."
        )
    return out.reshape(inputs.shape[0], -1)


def output_probe_trace(
    model: nn.Module,
    inputs: Tensor,
    *,
    num_probes: int = 8,
    output_fn: OutputFn | None = None,
    params: ParamSpec = None,
    generator: torch.Generator | None = None,
    shard_sum: Callable[[Tensor], Tensor] | None = None,
    gradient_scale: float = 1.0,
) -> NTKTrace:
    """``tr(J Jᵀ)`` of the batch ``inputs`` by ``num_probes`` output-space probes (see the module docstring).

    Args:
        model: the network (plain or FSDP2-sharded), in eval mode for BatchNorm and dropout (``ValueError``
            otherwise); its parameters, ``.grad`` (put back by identity) and mode are left as they were.
        inputs: a tensor whose first dimension indexes this rank's ``B`` examples.
        num_probes: Rademacher probes (one backward pass each; with 1 probe ``std_error`` is nan).
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``, its logits);
            first dimension ``B``, the rest flattened to ``K``.
        params: parameter names / globs (default: all with ``requires_grad=True``).
        generator: source of the probes; ``None`` uses the global torch RNG. Sharded: one per rank, seeded
            differently.
        shard_sum: the all-reduce sum over the ranks (sharded parameters or batch); ``None``: one process.
        gradient_scale: the factor that turns the gradient the backward leaves into ``Jᵀu`` of the union batch:
            the number of ranks under FSDP2 (its reduce-scatter averages), 1 otherwise.

    Returns:
        :class:`~lightning_spectral.functional.ntk.trace.NTKTrace` with ``method_used="output_probes"``,
        ``num_examples`` the union batch's.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> estimate = output_probe_trace(model, torch.randn(16, 4), num_probes=4,
        ...                               generator=torch.Generator().manual_seed(0))
        >>> estimate.method_used, estimate.num_examples, estimate.num_outputs
        ('output_probes', 16, 3)
    """
    check_int("num_probes", num_probes, 1)
    if not (isinstance(gradient_scale, (int, float)) and not isinstance(gradient_scale, bool)) or not (
        math.isfinite(gradient_scale) and gradient_scale > 0
    ):
        raise ValueError(f"`gradient_scale` must be a positive finite number, got {gradient_scale!r}.")
    if shard_sum is not None and not callable(shard_sum):
        raise TypeError(f"`shard_sum` must be a callable Tensor -> Tensor or None, got {shard_sum!r}.")
    num_examples = validate_inputs(inputs)
    check_examples_independent(model)
    total = shard_sum or (lambda partial: partial)
    shards = LocalShards.of(model, params)
    samples = []
    shapes: list[torch.Size] = []

    def loss() -> Tensor:
        out = _outputs(model, inputs, output_fn)
        shapes.append(out.shape)
        return (
            out * rademacher(tuple(out.shape), dtype=out.dtype, device=out.device, generator=generator)
        ).sum()

    for _ in range(num_probes):
        gradients = module_gradients(model, loss, shards.parameters)
        squared = sum(
            (g.detach().to(torch.float64).square().sum() for g in gradients if g is not None),
            torch.zeros((), dtype=torch.float64, device=shards.layout.device),
        )
        samples.append(squared)
    reduced = total(torch.stack([*samples, torch.tensor(float(num_examples), dtype=torch.float64,
                                                        device=shards.layout.device)]))  # fmt: skip
    values = reduced[:-1] * gradient_scale**2
    mean, std_error = mean_and_std_error(values.cpu())
    return NTKTrace(
        trace=mean,
        std_error=std_error,
        method_used="output_probes",
        num_examples=round(float(reduced[-1])),
        num_outputs=int(shapes[0][1]),
    )
