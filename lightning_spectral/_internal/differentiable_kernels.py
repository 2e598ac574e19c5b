"""Attention and recurrent layers computed by kernels that second-order and forward-mode differentiation can go
through.

**Attention.**
``torch.nn.functional.scaled_dot_product_attention`` (used by ``nn.MultiheadAttention``, ``nn.Transformer*``
and most transformer code) dispatches to fused kernels: FlashAttention on CPUs and GPUs, memory-efficient or
cuDNN attention on GPUs. Their backward is not differentiable again and they have no forward-mode derivative:
a double-backward Hessian-vector product raises ``derivative for
aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented``, a forward-over-reverse one
(and the NTK's Jacobian-vector products) ``Trying to use forward AD with
_scaled_dot_product_flash_attention_for_cpu``. In eval mode ``nn.MultiheadAttention`` also takes a "fast path",
``torch._native_multi_head_attention``, which has no forward-mode derivative either.

:func:`differentiable_kernels` runs the body with scaled-dot-product attention restricted to its math
backend (``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``: the same function written with matrix products
and a softmax, which autograd differentiates to any order and in forward mode) and with the multi-head
attention fast path switched off (``torch.backends.mha.set_fastpath_enabled(False)``), restoring both on exit.
The numbers are those of attention as defined; training keeps its fused kernels. Entering costs a few
microseconds. On PyTorch versions without these switches (before 2.3 for ``sdpa_kernel``) the body runs as is.

**Recurrent layers.** ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` run on oneDNN on CPUs (no forward-mode derivative:
``Trying to use forward AD with mkldnn_rnn_layer``) and on cuDNN on GPUs (whose RNN backward cannot be
differentiated again). For a model containing one of them, :func:`differentiable_kernels` (pass the model)
also switches oneDNN and cuDNN off for the body (``torch.backends.mkldnn.enabled``,
``torch.backends.cudnn.enabled``; restored on exit), so that PyTorch's native, differentiable RNN code runs; for
other models it leaves them on (convolutions are faster with them).

The estimators of :mod:`lightning_spectral.functional` evaluate the model inside it (the Hessian operator's
loss, the NTK's functional model; both tell it whether the model has recurrent layers): every monitor's
measurement goes through them.

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
    as well (see the module docstring). Every setting is restored on exit."""
    with _math_backend(), _no_mha_fastpath(), _native_recurrence() if recurrent else contextlib.nullcontext():
        yield
