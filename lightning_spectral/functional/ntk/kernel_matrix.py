"""The explicit empirical NTK matrix of a small batch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_spectral._internal.anomaly_mode import anomaly_detection_paused
from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.ntk.model_jacobian import (
    FORWARD_MODE_ERRORS,
    FunctionalModel,
    OutputFn,
    ParamSpec,
    make_functional_model,
    push_forward_by_reverse_mode,
    validate_inputs,
    warn_per_example_loop,
)

__all__ = ["MATRIX_JACOBIAN_BUDGET", "NTK_MATRIX_MAX_ROWS", "ntk_matrix", "per_example_jacobian"]

NTK_MATRIX_MAX_ROWS = 4096
"""Largest ``B·K`` :func:`ntk_matrix` accepts (the matrix then has 16.8 M entries)."""

MATRIX_JACOBIAN_BUDGET = 2**26
"""Default number of Jacobian entries (``chunk_size·K·P``) :func:`ntk_matrix` holds in one block."""


def per_example_jacobian(fm: FunctionalModel, inputs: Tensor) -> Tensor:
    """The Jacobian rows of ``inputs``: a ``(B·K, P)`` tensor, example-major rows, parameters in the order of
    ``fm.names``, each flattened row-major. ``vmap`` over examples of ``jacrev``; where ``vmap`` cannot batch the
    model over examples (``nn.LSTM``, ``nn.GRU``), one autograd pass per example, with a warning.
    """
    try:
        with anomaly_detection_paused():
            jacobians = torch.func.vmap(torch.func.jacrev(fm.example_outputs), in_dims=(None, 0))(
                fm.params, inputs
            )
    except FORWARD_MODE_ERRORS as error:
        warn_per_example_loop("per-example Jacobians", error)
        return torch.cat([_single_example_jacobian(fm, inputs[i : i + 1]) for i in range(inputs.shape[0])])
    batch = inputs.shape[0]
    first = jacobians[fm.names[0]]
    rows = batch * first.shape[1]
    return torch.cat([jacobians[name].reshape(rows, -1) for name in fm.names], dim=1)


def _single_example_jacobian(fm: FunctionalModel, example: Tensor) -> Tensor:
    """The ``(K, P)`` Jacobian of one example (a batch of one) by plain autograd: one forward pass, one
    backward pass vectorized over the ``K`` output directions.
    """
    params = {name: p.detach().requires_grad_(True) for name, p in fm.params.items()}
    with torch.enable_grad(), anomaly_detection_paused():
        outputs = fm.batch_outputs(params, example)  # (1, K)
        directions = torch.eye(outputs.shape[1], dtype=outputs.dtype, device=outputs.device)[:, None, :]
        grads = torch.autograd.grad(
            outputs, list(params.values()), directions, is_grads_batched=True, materialize_grads=True
        )
    return torch.cat([g.reshape(outputs.shape[1], -1) for g in grads], dim=1).detach()


def _unflatten(fm: FunctionalModel, flat: Tensor) -> dict[str, Tensor]:
    """Split the last dimension of ``flat`` (length ``P``) into tensors shaped like the parameters."""
    pieces = torch.split(flat, [fm.params[name].numel() for name in fm.names], dim=-1)
    return {
        name: piece.reshape(*flat.shape[:-1], *fm.params[name].shape) for name, piece in zip(fm.names, pieces)
    }


def ntk_matrix(
    model: nn.Module,
    inputs: Tensor,
    *,
    output_fn: OutputFn | None = None,
    params: ParamSpec = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The empirical NTK ``Θ = J Jᵀ`` of the batch ``inputs``, shape ``(B·K, B·K)``, example-major.

    Args:
        model: the network; BatchNorm and dropout must be in eval mode. Left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        chunk_size: examples per Jacobian block (see the docs' implementation notes).

    Raises:
        ValueError: if ``B·K > NTK_MATRIX_MAX_ROWS`` (argument ``inputs``), or ``chunk_size < 1``.

    Returns:
        ``(B·K, B·K)`` symmetric PSD tensor, ``Θ[(i, k), (j, l)] = ⟨∂f_k(x_i)/∂θ, ∂f_l(x_j)/∂θ⟩``.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> ntk_matrix(model, torch.randn(5, 4)).shape
        torch.Size([15, 15])
    """
    check_int("chunk_size", chunk_size, 1, optional=True)
    batch = validate_inputs(inputs)
    fm = make_functional_model(model, output_fn=output_fn, params=params)
    with torch.no_grad():
        num_outputs = fm.example_outputs(fm.params, inputs[0]).numel()
    rows = batch * num_outputs
    if rows > NTK_MATRIX_MAX_ROWS:
        raise ValueError(
            f"`inputs`: the NTK matrix would have B·K = {batch}·{num_outputs} = {rows} rows, more than "
            f"NTK_MATRIX_MAX_ROWS = {NTK_MATRIX_MAX_ROWS}; pass fewer examples (or use ntk_trace / "
            "ntk_lambda_max)."
        )
    if chunk_size is None:
        chunk_size = max(1, MATRIX_JACOBIAN_BUDGET // max(1, num_outputs * fm.num_params))
    if chunk_size >= batch:
        jacobian = per_example_jacobian(fm, inputs)
        kernel = jacobian @ jacobian.T
        return 0.5 * (kernel + kernel.T)  # bit-exact symmetry (a GEMM need not produce it)

    def batch_outputs(p: dict[str, Tensor]) -> Tensor:
        return fm.batch_outputs(p, inputs).reshape(-1)

    def push_forward(tangent: dict[str, Tensor]) -> Tensor:
        return torch.func.jvp(batch_outputs, (fm.params,), (tangent,))[1]

    reverse_push_forward = None  # where forward mode or vmap fail: J t by two reverse passes, row by row

    def columns_of(block: Tensor) -> Tensor:  # (c·K, P) -> J blockᵀ, (B·K, c·K)
        nonlocal reverse_push_forward
        if reverse_push_forward is None:
            try:
                with anomaly_detection_paused():
                    return torch.func.vmap(push_forward)(_unflatten(fm, block)).T
            except FORWARD_MODE_ERRORS:
                with torch.no_grad():
                    outputs = batch_outputs(fm.params)
                reverse_push_forward = push_forward_by_reverse_mode(batch_outputs, fm.params, outputs)
        return torch.stack([reverse_push_forward(_unflatten(fm, row)) for row in block], dim=1)

    columns = []
    for start in range(0, batch, chunk_size):
        block = per_example_jacobian(fm, inputs[start : start + chunk_size])  # (c·K, P)
        columns.append(columns_of(block))  # (B·K, c·K)
    kernel = torch.cat(columns, dim=1)
    return 0.5 * (kernel + kernel.T)  # bit-exact symmetry (the two halves agree up to rounding)
