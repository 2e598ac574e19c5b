"""The ``matvec`` convention shared by the matrix-free routines, and the check applied to every product."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

Matvec = Callable[[Tensor], Tensor]


def check_matvec(matvec: object) -> None:
    """Raise ``TypeError`` unless ``matvec`` is callable."""
    if not callable(matvec):
        raise TypeError("`matvec` must be callable (a function mapping a (dim,) tensor to a (dim,) tensor).")


def apply_matvec(matvec: Matvec, v: Tensor) -> Tensor:
    """``matvec(v)`` with its output checked: a tensor of ``v``'s shape, dtype and device.

    ``v`` is passed as a copy, so a ``matvec`` that modifies its input cannot corrupt the caller's vectors.
    The output is detached: the iterative routines return numbers, and a graph kept alive across their
    iterations (e.g. from a Hessian-vector product built with ``create_graph=True``) would only hold memory.
    Autograd stays enabled *inside* ``matvec``, which a Hessian-vector product needs.
    """
    out = matvec(v.clone())
    if not isinstance(out, Tensor):
        raise TypeError(f"`matvec` must return a torch.Tensor, got {type(out).__name__}.")
    if out.shape != v.shape:
        raise ValueError(f"`matvec` must return a tensor of shape {tuple(v.shape)}, got {tuple(out.shape)}.")
    if out.dtype != v.dtype or out.device != v.device:
        raise TypeError(
            f"`matvec` returned dtype {out.dtype} on {out.device} for an input of dtype {v.dtype} on "
            f"{v.device}; pass the operator's dtype/device to the estimator."
        )
    return out.detach()
