"""The trace of the empirical neural tangent kernel of a batch, exactly or by randomized trace estimation.

For outputs ``f(x) ∈ R^K`` and parameters ``θ ∈ R^P`` the empirical NTK of a batch ``x_1..x_B`` is the
``(B·K) × (B·K)`` matrix ``Θ = J Jᵀ`` with ``J = ∂f/∂θ`` (rows example-major). Its trace is

    tr Θ = Σ_i Σ_k ‖∂f_k(x_i)/∂θ‖² = ‖J‖_F²,

a sum over the batch (not a mean; divide by ``num_examples`` for the per-example NTK trace). It sets the
stochastic edge of stability of small-batch SGD (Agarwala & Pennington 2024, arXiv:2404.19261; see
:mod:`lightning_spectral.functional.sgd_stability`). Methods:

- ``"exact"``: per-example Jacobians with ``torch.func.vmap`` over examples of ``torch.func.jacrev``, reduced
  to ``Σ_i ‖J_i‖_F²`` chunk by chunk: ``chunk_size`` examples at a time, so at most ``chunk_size·K·P``
  Jacobian entries live at once. The default chunk holds about ``VECTORIZED_BUDGET = 2**24`` entries
  (``chunk_size = max(1, 2**24 // (K·P))``: 128 MiB in float64, 64 MiB in float32, plus activations).
  Cost: ``B·K`` backward passes, vectorised. ``std_error`` is 0.
- ``"hutchinson"``: ``tr Θ = E_v ‖Jᵀ v‖²`` for Rademacher ``v ∈ {±1}^{B·K}``; one forward, then one VJP
  (backward) per probe, vectorised over groups of ``max(1, VECTORIZED_BUDGET // P)`` probes; the estimate is
  the mean of the ``num_probes`` samples and ``std_error`` their standard error
  (``lightning_spectral.linalg.mean_and_std_error``).
- ``"hutchpp"``: Hutch++ (Meyer, Musco, Musco & Woodruff 2021, ``lightning_spectral.linalg.hutchpp_trace``)
  on the operator ``v ↦ J (Jᵀ v)`` (a VJP, then a JVP), with ``num_probes`` operator products. Lower
  variance than Hutchinson when a few NTK eigenvalues dominate (typical of trained classifiers), at two
  passes per product; needs forward-mode AD support for every operation of the model.
- ``"auto"``: ``"exact"`` when ``B·K ≤ AUTO_EXACT_MAX_ROWS = 128``, else ``"hutchinson"`` (reverse mode only,
  an honest sample standard error, one pass per probe). ``method_used`` says which ran.

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

from lightning_spectral.functional.model_jacobian import (
    FunctionalModel,
    OutputFn,
    ParamSpec,
    make_functional_model,
    ntk_products,
    validate_inputs,
)
from lightning_spectral.linalg import hutchpp_trace, mean_and_std_error, rademacher

__all__ = ["AUTO_EXACT_MAX_ROWS", "VECTORIZED_BUDGET", "NTKTrace", "ntk_trace"]

AUTO_EXACT_MAX_ROWS = 128
"""``method="auto"`` computes the trace exactly when ``B·K`` is at most this, else uses Hutchinson."""

VECTORIZED_BUDGET = 2**24
"""Entries held at once by one vectorised chunk: ``chunk_size·K·P`` Jacobian entries (exact, default
``chunk_size``) or ``probes·P`` gradient entries (Hutchinson probe groups)."""

_METHODS = ("auto", "exact", "hutchinson", "hutchpp")


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


def _exact_trace(fm: FunctionalModel, inputs: Tensor, num_outputs: int, chunk_size: int | None) -> Tensor:
    if chunk_size is None:
        chunk_size = max(1, VECTORIZED_BUDGET // max(1, num_outputs * fm.num_params))

    def squared_jacobian_norm(params: dict[str, Tensor], example: Tensor) -> Tensor:
        jacobian = torch.func.jacrev(fm.example_outputs)(params, example)
        return sum(j.pow(2).sum() for j in jacobian.values())

    per_example = torch.func.vmap(squared_jacobian_norm, in_dims=(None, 0), chunk_size=chunk_size)(
        fm.params, inputs
    )
    return per_example.to(torch.float64).sum()


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
        chunk_size: examples per vectorised Jacobian chunk of the exact method (default: see module doc).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        generator: random source of the probes; ``None`` uses the global torch RNG.
        reduce_fn: all-reduce-sum over processes of ``[trace, std_error², num_examples]`` (float64).

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
    fm = make_functional_model(model, output_fn=output_fn, params=params)

    if method == "exact":
        with torch.no_grad():
            num_outputs = fm.example_outputs(fm.params, inputs[0]).numel()
        trace, variance, method_used = _exact_trace(fm, inputs, num_outputs, chunk_size), 0.0, "exact"
    else:
        outputs, vjp, ntk_matvec = ntk_products(fm, inputs)
        num_outputs = outputs.shape[1]
        rows = num_examples * num_outputs
        if method == "auto" and rows <= AUTO_EXACT_MAX_ROWS:
            del vjp, ntk_matvec  # frees the kept forward pass before the exact computation
            trace, variance, method_used = _exact_trace(fm, inputs, num_outputs, chunk_size), 0.0, "exact"
        elif method in ("auto", "hutchinson"):
            probes = rademacher(
                (num_probes, *outputs.shape), dtype=outputs.dtype, device=outputs.device, generator=generator
            )
            group = max(1, VECTORIZED_BUDGET // max(1, fm.num_params))
            squared_norm = torch.func.vmap(lambda v: sum(g.pow(2).sum() for g in vjp(v).values()))
            samples = torch.cat([squared_norm(probes[i : i + group]) for i in range(0, num_probes, group)])
            mean, std_error = mean_and_std_error(samples.to(torch.float64))
            trace, variance, method_used = torch.tensor(mean, dtype=torch.float64), std_error**2, "hutchinson"
        else:
            estimate = hutchpp_trace(
                ntk_matvec, rows, num_probes, dtype=outputs.dtype, device=outputs.device, generator=generator
            )
            trace = torch.tensor(estimate.estimate, dtype=torch.float64)
            variance, method_used = estimate.std_error**2, "hutchpp"

    device = next(iter(fm.params.values())).device
    pieces = torch.tensor(
        [float(trace), float(variance), float(num_examples)], dtype=torch.float64, device=device
    )
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
