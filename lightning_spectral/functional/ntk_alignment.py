"""Kernel-target alignment of the empirical NTK with the labels.

Cristianini, Shawe-Taylor, Elisseeff & Kandola (2002, "On kernel-target alignment") define the alignment of
a kernel matrix ``Θ`` with a target vector ``y`` as the cosine between ``Θ`` and ``y yᵀ`` in the Frobenius
inner product:

    A(Θ, y) = ⟨Θ, y yᵀ⟩_F / (‖Θ‖_F ‖y yᵀ‖_F) = yᵀ Θ y / (‖Θ‖_F ‖y‖²).

For a PSD ``Θ`` it lies in ``[0, 1]`` and equals 1 exactly when ``Θ = c·y yᵀ`` with ``c > 0``. Applied to the
NTK it measures how much of the kernel's "energy" points along the labels; its rise during training tracks
the lazy → rich transition (Baratin et al. 2021; Kumar et al. 2024, "Grokking as the transition from lazy to
rich training dynamics").

``centered=True`` gives the centred alignment of Cortes, Mohri & Rostamizadeh (2012): ``Θ`` and ``y yᵀ`` are
replaced by ``H Θ H`` and ``H y yᵀ H`` with ``H = I − 11ᵀ/N`` (``N`` = number of rows), which removes the
constant offset that inflates the plain alignment of, e.g., one-hot targets. For the NTK of a batch the rows
are the ``B·K`` (example, output) pairs, example-major, and ``H`` centres over all of them.

Targets for :func:`ntk_alignment`: integer class indices of shape ``(B,)`` are one-hot encoded to ``K``
columns (``K`` = outputs per example, e.g. the number of logits); any floating tensor with ``B·K`` entries
(``(B, K)``, or ``(B,)`` when ``K = 1``) is used as given, flattened example-major like the outputs.

Example::

    >>> import torch
    >>> y = torch.tensor([1.0, -1.0, 2.0])
    >>> kernel_target_alignment(3.0 * torch.outer(y, y), y)
    1.0
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_spectral.functional.model_jacobian import OutputFn, ParamSpec
from lightning_spectral.functional.ntk_matrix import ntk_matrix

__all__ = ["kernel_target_alignment", "ntk_alignment", "ntk_targets"]


def _center(kernel: Tensor) -> Tensor:
    return kernel - kernel.mean(dim=0, keepdim=True) - kernel.mean(dim=1, keepdim=True) + kernel.mean()


def kernel_target_alignment(kernel: Tensor, targets: Tensor, *, centered: bool = False) -> float:
    """``⟨Θ, y yᵀ⟩_F / (‖Θ‖_F ‖y yᵀ‖_F)`` for a square ``kernel`` ``(N, N)`` and ``targets`` with ``N``
    entries (flattened); centred (Cortes et al. 2012) when ``centered=True``. Computed in float64.

    Raises ``ValueError`` for a non-square kernel, mismatched sizes, or a zero kernel / target (the
    alignment is then undefined).
    """
    if not isinstance(kernel, Tensor) or kernel.dim() != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(
            f"`kernel` must be a square 2-D tensor, got {getattr(kernel, 'shape', type(kernel))}."
        )
    if not isinstance(targets, Tensor) or targets.numel() != kernel.shape[0]:
        raise ValueError(
            f"`targets` must be a tensor with {kernel.shape[0]} entries (the kernel's size), "
            f"got {getattr(targets, 'shape', type(targets))}."
        )
    theta = kernel.detach().to(torch.float64)
    y = targets.detach().reshape(-1).to(device=theta.device, dtype=torch.float64)
    target_kernel = torch.outer(y, y)
    if centered:
        theta, target_kernel = _center(theta), _center(target_kernel)
    kernel_norm = torch.linalg.matrix_norm(theta)
    target_norm = torch.linalg.matrix_norm(target_kernel)
    if kernel_norm == 0:
        raise ValueError(
            "`kernel` is zero" + (" after centring" if centered else "") + ": alignment undefined."
        )
    if target_norm == 0:
        raise ValueError(
            "`targets` is zero" + (" after centring" if centered else "") + ": alignment undefined."
        )
    return float((theta * target_kernel).sum() / (kernel_norm * target_norm))


def ntk_targets(targets: Tensor, num_examples: int, num_outputs: int) -> Tensor:
    """The target vector ``y ∈ R^{B·K}`` matched to the NTK rows (see the module docstring)."""
    if not isinstance(targets, Tensor):
        raise TypeError(f"`targets` must be a torch.Tensor, got {type(targets)}.")
    if not targets.is_floating_point():
        if targets.dtype == torch.bool or targets.is_complex() or targets.shape != (num_examples,):
            raise ValueError(
                f"`targets`: integer targets must be class indices of shape ({num_examples},), "
                f"got dtype {targets.dtype} and shape {tuple(targets.shape)}."
            )
        if targets.min() < 0 or targets.max() >= num_outputs:
            raise ValueError(
                f"`targets`: class indices must lie in [0, {num_outputs}) (K = outputs per example); for a "
                "single-output model pass floating targets (e.g. ±1 labels)."
            )
        return nn.functional.one_hot(targets, num_outputs).reshape(-1)
    if targets.numel() != num_examples * num_outputs or targets.shape[0] != num_examples:
        raise ValueError(
            f"`targets`: floating targets must have shape ({num_examples}, ...) with B·K = "
            f"{num_examples * num_outputs} entries, got shape {tuple(targets.shape)}."
        )
    return targets.reshape(-1)


def ntk_alignment(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    output_fn: OutputFn | None = None,
    params: ParamSpec = None,
    centered: bool = False,
    chunk_size: int | None = None,
) -> float:
    """Kernel-target alignment of the empirical NTK of ``inputs`` (:func:`ntk_matrix`, so ``B·K`` is
    limited to ``NTK_MATRIX_MAX_ROWS``) with ``targets`` (class indices are one-hot encoded, see the module
    docstring); centred when ``centered=True``."""
    kernel = ntk_matrix(model, inputs, output_fn=output_fn, params=params, chunk_size=chunk_size)
    num_examples = inputs.shape[0]
    y = ntk_targets(targets, num_examples, kernel.shape[0] // num_examples)
    return kernel_target_alignment(kernel, y, centered=centered)
