"""The trace of the empirical neural tangent kernel of a batch, exactly or by randomized trace estimation.

For outputs ``f(x) ∈ R^K`` and parameters ``θ ∈ R^P`` the empirical NTK of a batch ``x_1..x_B`` is the
``(B·K) × (B·K)`` matrix ``Θ = J Jᵀ`` with ``J = ∂f/∂θ`` (rows example-major). Its trace is

    tr Θ = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖² = ‖J‖_F²,

a sum over the batch (not a mean; divide by ``num_examples`` for the per-example NTK trace). It sets the
stochastic edge of stability of small-batch SGD (Agarwala & Pennington 2024, arXiv:2404.19261; see
:mod:`lightning_spectral.functional.ntk.sgd_stability`). Methods:

- ``"exact"``: ``Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²`` from
  :func:`lightning_spectral.functional.ntk.per_example_gradient_norms.per_example_squared_gradient_norms` with
  one-hot cotangents: for ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers one vectorised backward pass of
  the whole batch per output ``k`` (``K`` passes, not ``B·K``) and the per-example norms by the layer-wise
  identity ``‖Σ_t δ_t a_tᵀ‖² = Σ_{t,s} (δ_t·δ_s)(a_t·a_s)``, without forming per-example gradients; every other
  parameter by ``torch.func.vmap`` over examples of per-example gradients, ``chunk_size`` examples at a time
  (default about ``VECTORIZED_BUDGET / P``). ``std_error`` is 0.
- ``"hutchinson"``: per-example Hutchinson. For Rademacher ``v ∈ {±1}^{B×K}``,
  ``Σ_i ‖J_iᵀ v_i‖²`` (``J_i = ∂f(x_i)/∂θ``, ``K × P``) has expectation ``Σ_i tr(J_i J_iᵀ) = tr Θ``; each probe
  costs one backward pass of the batch (the per-example norms come from the same layer-wise identity).
  Its variance, ``2 Σ_i Σ_{k≠l} (J_i J_iᵀ)_{kl}²`` per probe, involves only the NTK blocks of single examples,
  where the plain estimator ``‖Jᵀv‖²`` also carries every cross-example entry ``2 Σ_{(i,k)≠(j,l)} Θ²``
  — the dominant part for a batch whose examples share a kernel direction. The estimate is the mean of the
  ``num_probes`` samples and ``std_error`` their standard error
  (``lightning_spectral.linalg.mean_and_std_error``).
- ``"hutchpp"``: Hutch++ (Meyer, Musco, Musco & Woodruff 2021, ``lightning_spectral.linalg.hutchpp_trace``)
  on the whole-batch operator ``v ↦ J (Jᵀ v)`` (a VJP, then a JVP), with ``num_probes`` operator products.
  Lower variance than plain Hutchinson when a few NTK eigenvalues dominate, at two passes per product; needs
  forward-mode AD support for every operation of the model.
- ``"auto"``: ``"exact"`` when ``K ≤ num_probes`` (the exact trace then costs no more passes than the
  estimate) or ``B·K ≤ AUTO_EXACT_MAX_ROWS = 128``, else ``"hutchinson"``; for ``K > AUTO_FEW_PROBES_OUTPUTS``
  (a sequence model's ``T·V`` logits per example: a GPT-2 vocabulary gives millions) with at most
  ``AUTO_FEW_PROBES = 2`` probes, whose probes alone (``num_probes·B·K`` entries) would otherwise cost more than
  the passes. ``method_used`` says which ran; ``std_error`` says what the fewer probes cost in accuracy.
- ``"output_probes"``: ``E_u ‖Jᵀu‖²`` over whole-batch Rademacher probes, one backward pass of the model's own
  per probe (:mod:`lightning_spectral.functional.ntk.output_probes`): needs neither per-example gradients nor
  :mod:`torch.func`, so it runs through any strategy's forward and backward (FSDP2 without gathering), at a
  higher variance (every cross-example entry of the kernel); never chosen by ``"auto"`` here.

Distributed use: ``reduce_fn`` receives a float64 tensor ``[trace, std_error², num_examples]`` of this
process's batch and must return the element-wise sum over processes (an all-reduce-sum). Traces add over
disjoint batches (the trace of the NTK of the union of the batches involves only its diagonal entries, which
each process computes for its own examples), and so do the variances of independent estimates. The tensor
lives on the device of the model's parameters, as a NCCL all-reduce needs.

Example::

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> result = ntk_trace(model, torch.randn(16, 4), method="exact")
    >>> result.method_used, result.num_examples, result.num_outputs, result.std_error
    ('exact', 16, 3, 0.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_spectral.functional.ntk.model_jacobian import (
    OutputFn,
    ParamSpec,
    make_functional_model,
    ntk_products,
    select_parameters,
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

_METHODS = ("auto", "exact", "hutchinson", "hutchpp", "output_probes")


@dataclass(frozen=True)
class NTKTrace:
    """``trace`` = ``Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖²`` over the batch (over all processes when ``reduce_fn`` is
    given), its ``std_error`` (0 for the exact method), the method that ran, ``B`` and ``K``."""

    trace: float
    std_error: float
    method_used: str
    num_examples: int
    num_outputs: int


def _check_positive_int(value: object, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def ntk_trace(
    model: nn.Module,
    inputs: Tensor,
    *,
    method: str = "auto",
    num_probes: int = 8,
    output_fn: OutputFn | None = None,
    chunk_size: int | None = None,
    params: ParamSpec = None,
    generator: torch.Generator | None = None,
    reduce_fn: Callable[[Tensor], Tensor] | None = None,
    layerwise_checks: LayerwiseChecks | None = None,
) -> NTKTrace:
    """Trace of the empirical NTK ``Θ = J Jᵀ`` of the batch ``inputs`` (see the module docstring).

    Args:
        model: the network; BatchNorm and dropout must be in eval mode (``ValueError`` otherwise). Its
            parameters, gradients, buffers, mode and ``requires_grad`` flags are left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        method: ``"auto"``, ``"exact"``, ``"hutchinson"`` or ``"hutchpp"``.
        num_probes: Rademacher probes (Hutchinson; with 1 probe ``std_error`` is nan) or operator products
            (Hutch++, at least 3; its ``std_error`` is the standard error of its Hutchinson part given the
            sketch); ignored by ``"exact"``.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``, the logits for
            a classifier); its first dimension must be ``B``, the rest is flattened to ``K``.
        chunk_size: examples per vectorised chunk of per-example gradients, for the parameters outside
            linear and convolution layers (default: see module doc).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        generator: random source of the probes; ``None`` uses the global torch RNG.
        reduce_fn: all-reduce-sum over processes of ``[trace, std_error², num_examples]`` (float64).
        layerwise_checks: a :class:`~lightning_spectral.functional.ntk.per_example_gradient_norms.LayerwiseChecks`
            kept across calls on one model: the per-example check of the layer-wise norms runs once per set-up
            instead of on every call (``"exact"`` and ``"hutchinson"``).

    Returns:
        :class:`NTKTrace`.
    """
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    _check_positive_int(num_probes, "num_probes")
    if method == "hutchpp" and num_probes < 3:
        raise ValueError(
            "`num_probes` must be at least 3 for method='hutchpp' (sketch, exact part, probes), "
            f"got {num_probes}."
        )
    _check_positive_int(chunk_size, "chunk_size", allow_none=True)
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
