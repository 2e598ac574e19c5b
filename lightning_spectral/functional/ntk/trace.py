"""The trace of the empirical neural tangent kernel of a batch, exactly or by randomized trace estimation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from lightning_spectral._internal.validation import check_choice, check_int
from lightning_spectral.functional._common.parameter_selection import select_parameters
from lightning_spectral.functional.ntk.model_jacobian import (
    OutputFn,
    ParamSpec,
    make_functional_model,
    ntk_products,
    validate_inputs,
)
from lightning_spectral.functional.ntk.per_example_gradient_norms import (
    VECTORIZED_BUDGET,
    LayerwiseChecks,
    per_example_squared_gradient_norms,
)
from lightning_spectral.linalg import hutchpp_trace, mean_and_std_error, rademacher

__all__ = [
    "AUTO_EXACT_MAX_ROWS",
    "AUTO_FEW_PROBES",
    "AUTO_FEW_PROBES_OUTPUTS",
    "VECTORIZED_BUDGET",
    "NTKTrace",
    "ntk_trace",
]

AUTO_EXACT_MAX_ROWS = 128
"""``method="auto"`` computes the trace exactly when ``B·K`` is at most this (or ``K ≤ num_probes``)."""

AUTO_FEW_PROBES_OUTPUTS = 2**16
"""Above this many outputs per example ``method="auto"`` uses at most :data:`AUTO_FEW_PROBES` probes."""

AUTO_FEW_PROBES = 2
"""The probes of ``method="auto"`` for sequence-sized outputs (2: the least that gives a standard error)."""

#: How :func:`ntk_trace` computes the trace: exactly, by Hutchinson or Hutch++ probes, by output-space probes
#: through the model's own backward (any strategy), or chosen by size.
NTKTraceMethod = Literal["auto", "exact", "hutchinson", "hutchpp", "output_probes"]
_METHODS: tuple[NTKTraceMethod, ...] = get_args(NTKTraceMethod)


@dataclass(frozen=True)
class NTKTrace:
    """``trace`` = ``Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²`` over the batch (over all processes when ``reduce_fn`` is
    given), its ``std_error`` (0 for the exact method), the method that ran, ``B`` and ``K``.

    Attributes:
        trace: ``tr Θ``.
        std_error: its standard error (``0.0`` for the exact method).
        method_used: ``"exact"``, ``"hutchinson"``, ``"hutchpp"`` or ``"output_probes"``.
        num_examples: ``B``.
        num_outputs: ``K``.

    Example:
        >>> result = NTKTrace(trace=12.0, std_error=0.0, method_used="exact", num_examples=4, num_outputs=3)
        >>> result.trace / result.num_examples  # the mean per-example trace
        3.0
    """

    trace: float
    std_error: float
    method_used: str
    num_examples: int
    num_outputs: int


def ntk_trace(
    model: nn.Module,
    inputs: Tensor,
    *,
    method: NTKTraceMethod = "auto",
    num_probes: int = 8,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    params: ParamSpec = None,
    generator: torch.Generator | None = None,
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
    layerwise_checks: LayerwiseChecks | None = None,
) -> NTKTrace:
    r"""Trace of the empirical NTK ``Θ = J Jᵀ`` of the batch ``inputs``.

    .. math::

        \operatorname{tr}\Theta = \sum_{i=1}^{B} \sum_{k=1}^{K} \Big\| \frac{\partial f_k(x_i)}{\partial\theta} \Big\|^2

    ``"exact"`` sums the per-example squared gradient norms (layer by layer where the algebra allows),
    ``"hutchinson"`` and ``"hutchpp"`` estimate it from Rademacher probes of the outputs, ``"auto"`` takes the
    exact method when ``K <= num_probes``. ``"output_probes"`` estimates ``E_u ‖Jᵀu‖²`` over whole-batch
    Rademacher probes ``u``, one backward pass of the model's own per probe
    (:func:`~lightning_spectral.functional.ntk.output_probes.output_probe_trace`): it needs neither per-example
    gradients nor :mod:`torch.func`, so it runs through any strategy's forward and backward (FSDP2 without
    gathering), at a higher variance (every cross-example entry of the kernel); ``"auto"`` never picks it.

    Args:
        model: the network; BatchNorm and dropout must be in eval mode (``ValueError`` otherwise). Its
            parameters, gradients, buffers, mode and ``requires_grad`` flags are left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        method: ``"auto"``, ``"exact"``, ``"hutchinson"``, ``"hutchpp"`` or ``"output_probes"``.
        num_probes: Rademacher probes (Hutchinson; with 1 probe ``std_error`` is nan) or operator products
            (Hutch++, at least 3; its ``std_error`` is the standard error of its Hutchinson part given the
            sketch); ignored by ``"exact"``.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``, the logits for
            a classifier); its first dimension must be ``B``, the rest is flattened to ``K``.
        chunk_size: examples per vectorized chunk of per-example gradients, for the parameters outside
            linear and convolution layers (default: see the docs' implementation notes).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        generator: random source of the probes; ``None`` uses the global torch RNG.
        reduce_fn: all-reduce-sum over processes of ``[trace, std_error², num_examples]`` (float64).
        layerwise_checks: a :class:`~lightning_spectral.functional.ntk.per_example_gradient_norms.LayerwiseChecks`
            kept across calls on one model: the per-example check of the layer-wise norms runs once per set-up
            instead of on every call (``"exact"`` and ``"hutchinson"``).

    Returns:
        :class:`NTKTrace`.

    Raises:
        ValueError: ``method``, ``num_probes`` or ``chunk_size`` out of range, or a model in train mode with
            BatchNorm or dropout.
        TypeError: ``reduce_fn`` is not callable.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> result = ntk_trace(model, torch.randn(16, 4), method="exact")
        >>> result.method_used, result.num_examples, result.num_outputs, result.std_error
        ('exact', 16, 3, 0.0)
    """
    check_choice("method", method, _METHODS)
    check_int("num_probes", num_probes, 1)
    if method == "hutchpp" and num_probes < 3:
        raise ValueError(
            "`num_probes` must be at least 3 for method='hutchpp' (sketch, exact part, probes), "
            f"got {num_probes}."
        )
    check_int("chunk_size", chunk_size, 1, optional=True)
    if reduce_fn is not None and not callable(reduce_fn):
        raise TypeError(f"`reduce_fn` must be a callable Tensor -> Tensor or None, got {reduce_fn!r}.")
    num_examples = validate_inputs(inputs)
    if method == "output_probes":
        from lightning_spectral.functional.ntk.output_probes import output_probe_trace

        probed = output_probe_trace(
            model, inputs, num_probes=num_probes, output_fn=output_fn, params=params, generator=generator
        )
        local = (probed.trace, probed.std_error**2, num_examples)
        device = next(iter(select_parameters(model, params).values())).device
        return _reduced(local, device, reduce_fn, "output_probes", probed.num_outputs)
    fm = make_functional_model(model, output_fn=output_fn, params=params)
    with torch.no_grad():
        num_outputs = fm.example_outputs(fm.params, inputs[0]).numel()
    if method == "auto":
        small = num_outputs <= num_probes or num_examples * num_outputs <= AUTO_EXACT_MAX_ROWS
        method = "exact" if small else "hutchinson"
        if num_outputs > AUTO_FEW_PROBES_OUTPUTS:
            num_probes = min(num_probes, AUTO_FEW_PROBES)

    if method == "exact":
        norms = per_example_squared_gradient_norms(
            fm, inputs, None, chunk_size=chunk_size, checks=layerwise_checks
        )
        trace, variance = norms.to(torch.float64).sum(), 0.0
    elif method == "hutchinson":
        device = next(iter(fm.params.values())).device
        dtype = next(iter(fm.params.values())).dtype
        probes = rademacher(
            (num_probes, num_examples, num_outputs), dtype=dtype, device=device, generator=generator
        )
        norms = per_example_squared_gradient_norms(
            fm, inputs, probes, chunk_size=chunk_size, checks=layerwise_checks
        )
        mean, std_error = mean_and_std_error(norms.to(torch.float64).sum(1))
        trace, variance = torch.tensor(mean, dtype=torch.float64), std_error**2
    else:
        outputs, _, ntk_matvec = ntk_products(fm, inputs)
        estimate = hutchpp_trace(
            ntk_matvec,
            outputs.numel(),
            num_probes,
            dtype=outputs.dtype,
            device=outputs.device,
            generator=generator,
        )
        trace = torch.tensor(estimate.estimate, dtype=torch.float64)
        variance = estimate.std_error**2
    device = next(iter(fm.params.values())).device
    return _reduced((float(trace), float(variance), num_examples), device, reduce_fn, method, num_outputs)


def _reduced(
    local: tuple[float, float, int],
    device: torch.device,
    reduce_fn: Callable[[Tensor], Tensor] | None,
    method_used: str,
    num_outputs: int,
) -> NTKTrace:
    """The :class:`NTKTrace` of this process's ``(trace, variance, num_examples)`` summed by ``reduce_fn``."""
    pieces = torch.tensor([float(v) for v in local], dtype=torch.float64, device=device)
    if reduce_fn is not None:
        pieces = reduce_fn(pieces)
        if not isinstance(pieces, Tensor) or pieces.shape != (3,):
            raise ValueError("`reduce_fn` must return a tensor of the same shape (3,) as its argument.")
    total, variance_sum, examples = (float(v) for v in pieces.to(torch.float64).cpu())
    return NTKTrace(
        trace=total,
        std_error=max(variance_sum, 0.0) ** 0.5,
        method_used=method_used,
        num_examples=round(examples),
        num_outputs=int(num_outputs),
    )
