"""Exact dense references the estimators are tested against."""

from __future__ import annotations

import math

import torch
from torch import nn


def dense_hessian(model, loss_of_forward, batch, names=None):
    """``torch.autograd.functional.hessian`` of ``loss_of_forward(forward, batch)`` in the flat parameters.

    ``forward(x)`` runs ``model`` with the (flat) parameters substituted; ``names`` selects parameters
    (default: those with ``requires_grad``). Buffers are copies, so train-mode BatchNorm leaves the model alone.
    """
    named = {
        n: p.detach()
        for n, p in model.named_parameters()
        if (names is None and p.requires_grad) or (names is not None and n in names)
    }
    shapes = [p.shape for p in named.values()]
    flat = torch.cat([p.reshape(-1) for p in named.values()])
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def loss_of(flat_params):
        pieces = torch.split(flat_params, [s.numel() for s in shapes])
        params = {n: piece.view(s) for n, piece, s in zip(named, pieces, shapes)}
        return loss_of_forward(
            lambda x: torch.func.functional_call(model, {**params, **buffers}, (x,)), batch
        )

    return torch.autograd.functional.hessian(loss_of, flat)


def explicit_jacobian(model, inputs, output_fn=None, names=None) -> torch.Tensor:
    """``∂ vec(f) / ∂θ`` of the whole batch as a (B·K, P) matrix, by jacrev on the flat parameter vector."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    shapes = [named[n].shape for n in names]
    flat = torch.cat([named[n].detach().reshape(-1) for n in names])
    output_fn = output_fn or (lambda m, x: m(x))

    def outputs(theta):
        state, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = math.prod(shape)
            state[name] = theta[offset : offset + size].reshape(shape)
            offset += size
        return torch.func.functional_call(
            wrapper, {"model." + k: v for k, v in state.items()}, (inputs,)
        ).reshape(-1)

    wrapper = _OutputOf(model, output_fn)
    return torch.func.jacrev(outputs)(flat)


class _OutputOf(nn.Module):
    def __init__(self, model, output_fn):
        super().__init__()
        self.model, self.output_fn = model, output_fn

    def forward(self, inputs):
        return self.output_fn(self.model, inputs)


def assert_top_hessian_eigenvalues(model, reference, loss_fn, batch, reference_batch, k, hvp_method):
    """The top ``k`` Hessian eigenvalues of ``model`` (float32) by ``hessian_eigenvalues`` equal ``eigvalsh`` of
    the dense float64 Hessian of ``reference`` (a float64 copy, or a twin computing the same function) on
    ``reference_batch``, to 1e-4 relative (float32 products)."""
    from lightning_spectral.functional import hessian_eigenvalues

    exact = torch.linalg.eigvalsh(dense_hessian(reference, lambda f, b: loss_fn(f, b), reference_batch))
    result = hessian_eigenvalues(
        model,
        loss_fn,
        batch,
        k=k,
        tol=1e-7,
        hvp_method=hvp_method,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(result.eigenvalues.double(), exact.flip(0)[:k], rtol=1e-4, atol=1e-6)


def autograd_jacobian(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Rows ``∂ out[i, k] / ∂θ`` (example-major), one ``torch.autograd.grad`` call per row."""
    params = list(model.parameters())
    outputs = model(inputs)
    rows = []
    for i in range(outputs.shape[0]):
        for k in range(outputs.shape[1]):
            grads = torch.autograd.grad(outputs[i, k], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)
