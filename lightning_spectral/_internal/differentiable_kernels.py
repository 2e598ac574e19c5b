"""Attention and recurrent layers computed by kernels that second-order and forward-mode differentiation can go
through.

Example::

    >>> import torch
    >>> q = torch.randn(1, 1, 3, 4, requires_grad=True)
    >>> with differentiable_kernels():
    ...     out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
    ...     (g,) = torch.autograd.grad(out.sum(), q, create_graph=True)
    ...     (h,) = torch.autograd.grad(g.sum(), q)  # a second derivative: fused kernels refuse this
    >>> h.shape
    torch.Size([1, 1, 3, 4])
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["differentiable_kernels", "has_recurrent_layers"]


def _math_backend() -> contextlib.AbstractContextManager[object]:
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - PyTorch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    backend = getattr(torch.backends, "mha", None)
    if backend is None or not hasattr(backend, "set_fastpath_enabled"):  # pragma: no cover - old PyTorch
        yield
        return
    before = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(before)


def has_recurrent_layers(model: nn.Module | None) -> bool:
    """Whether ``model`` contains an ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (``nn.RNNBase``)."""
    return model is not None and any(isinstance(module, nn.RNNBase) for module in model.modules())


@contextlib.contextmanager
def _native_recurrence() -> Iterator[None]:
    before = torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]  # torch types it as its ContextProp
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled = before


@contextlib.contextmanager
def differentiable_kernels(recurrent: bool = False) -> Iterator[None]:
    """Scaled-dot-product attention on its math backend and no multi-head attention fast path inside the body;
    with ``recurrent=True`` (a model with RNN layers, see :func:`has_recurrent_layers`) oneDNN and cuDNN off
    as well (see the docs' implementation notes). Every setting is restored on exit.
    """
    with _math_backend(), _no_mha_fastpath(), _native_recurrence() if recurrent else contextlib.nullcontext():
        yield
