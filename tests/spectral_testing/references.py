"""Exact dense references the estimators are tested against."""

from __future__ import annotations

import torch


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
