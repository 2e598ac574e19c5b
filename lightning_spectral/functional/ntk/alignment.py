"""Kernel-target alignment of the empirical NTK with the labels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_spectral._internal.validation import check_int
from lightning_spectral.functional.ntk.kernel_matrix import ntk_matrix
from lightning_spectral.functional.ntk.model_jacobian import OutputFn, ParamSpec

__all__ = [
    "ALIGNMENT_FORMS",
    "kernel_alignments",
    "kernel_target_alignment",
    "ntk_alignment",
    "ntk_targets",
    "offdiagonal_alignment",
]

#: The alignments :func:`kernel_alignments` computes, as named in the metric keys (``spectral/ntk/<form>``).
ALIGNMENT_FORMS = ("alignment", "alignment_centered", "alignment_offdiagonal")


def _center(kernel: Tensor) -> Tensor:
    return kernel - kernel.mean(dim=0, keepdim=True) - kernel.mean(dim=1, keepdim=True) + kernel.mean()


def kernel_target_alignment(kernel: Tensor, targets: Tensor, *, centered: bool = False) -> float:
    r"""The kernel-target alignment of Cristianini et al. (2002), in float64.

    .. math::

        A(\Theta, y) = \frac{\langle \Theta, y y^\top \rangle_F}{\|\Theta\|_F \, \|y y^\top\|_F}

    With ``centered=True`` (Cortes, Mohri & Rostamizadeh 2012) ``Θ`` and ``y yᵀ`` are replaced by ``HΘH`` and
    ``H y yᵀ H``, ``H = I − 11ᵀ/N``.

    Args:
        kernel: ``(N, N)`` kernel matrix.
        targets: ``N`` target entries (flattened).
        centered: center both matrices first.

    Returns:
        The alignment, in ``[0, 1]`` for a PSD kernel.

    Raises:
        ValueError: a non-square kernel, mismatched sizes, or a zero kernel or target (undefined).

    Example:
        >>> import torch
        >>> y = torch.tensor([1.0, -1.0, 2.0])
        >>> kernel_target_alignment(3.0 * torch.outer(y, y), y)
        1.0
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


#: Values whose spread about their mean is below this fraction of their size count as constant (the mean
#: of equal float64 numbers is not always exactly equal to them).
CONSTANT_RTOL = 1e-12


def _centered(values: Tensor) -> Tensor | None:
    """``values − mean``, or ``None`` where the values are constant (up to ``CONSTANT_RTOL``)."""
    centered = values - values.mean()
    spread = torch.linalg.vector_norm(centered)
    return None if spread <= CONSTANT_RTOL * torch.linalg.vector_norm(values) else centered / spread


def _check_offdiagonal_args(kernel: Tensor, targets: Tensor, num_examples: int) -> None:
    check_int("num_examples", num_examples, 3)  # the correlation needs several pairs
    if (
        not isinstance(kernel, Tensor)
        or kernel.dim() != 2
        or kernel.shape[0] != kernel.shape[1]
        or kernel.shape[0] % num_examples
    ):
        raise ValueError(
            f"`kernel` must be a square 2-D tensor whose size is a multiple of num_examples={num_examples}, "
            f"got {getattr(kernel, 'shape', type(kernel))}."
        )
    if not isinstance(targets, Tensor) or targets.numel() != kernel.shape[0]:
        raise ValueError(
            f"`targets` must be a tensor with {kernel.shape[0]} entries (the kernel's size), "
            f"got {getattr(targets, 'shape', type(targets))}."
        )


def _offdiagonal_parts(
    kernel: Tensor, targets: Tensor, num_examples: int
) -> tuple[Tensor | None, Tensor | None]:
    """The centered, normalized entries ``i ≠ j`` of the output-traced kernel and of the targets' Gram matrix
    (``None`` for a part that is constant there), float64.
    """
    num_outputs = kernel.shape[0] // num_examples
    theta = kernel.detach().to(torch.float64).reshape(num_examples, num_outputs, num_examples, num_outputs)
    traced = torch.einsum("ikjk->ij", theta)
    y = targets.detach().to(device=traced.device, dtype=torch.float64).reshape(num_examples, num_outputs)
    distinct = ~torch.eye(num_examples, dtype=torch.bool, device=traced.device)
    return _centered(traced[distinct]), _centered((y @ y.T)[distinct])


def offdiagonal_alignment(kernel: Tensor, targets: Tensor, num_examples: int) -> float:
    r"""Pearson correlation over the pairs of distinct examples ``i ≠ j`` between the output-traced kernel
    ``Θ̄_ij = Σ_k Θ_(i,k),(j,k)`` and the targets' Gram matrix ``⟨y_i, y_j⟩`` (see the docs' implementation notes), in float64.

    ``kernel`` is the ``(B·K, B·K)`` NTK (rows example-major, ``B = num_examples``), ``targets`` the matching
    ``B·K`` target entries (:func:`ntk_targets`).

    .. math::

        A_{\text{off}} = \operatorname{corr}_{i \ne j}\big(\bar\Theta_{ij}, \langle y_i, y_j \rangle\big)

    Args:
        kernel: the ``(B·K, B·K)`` NTK.
        targets: the ``B·K`` target entries.
        num_examples: ``B`` (``>= 3``).

    Returns:
        The correlation, in ``[-1, 1]``.

    Raises:
        ValueError: fewer than 3 examples, mismatched sizes, or a kernel or Gram matrix that is constant over
            the pairs (undefined).

    Example:
        >>> import torch
        >>> labels = torch.tensor([1.0, 1.0, -1.0, -1.0])  # one output per example: Θ̄ = Θ
        >>> kernel = torch.eye(4) + torch.block_diag(torch.ones(2, 2), torch.ones(2, 2))
        >>> round(offdiagonal_alignment(kernel, labels, num_examples=4), 12)
        1.0
    """
    _check_offdiagonal_args(kernel, targets, num_examples)
    traced, gram = _offdiagonal_parts(kernel, targets, num_examples)
    if traced is None or gram is None:
        name = "kernel" if traced is None else "targets' Gram matrix"
        raise ValueError(
            f"the {name} is constant over the pairs of distinct examples: the off-diagonal alignment is "
            "undefined (for class labels: use a batch in which some, not all, examples share a label)."
        )
    return float((traced * gram).sum())


def kernel_alignments(kernel: Tensor, targets: Tensor, num_examples: int) -> dict[str, float]:
    """Every alignment of :data:`ALIGNMENT_FORMS` that is defined here, from one kernel: ``alignment``
    always; ``alignment_centered`` unless the targets are constant; ``alignment_offdiagonal`` for
    ``num_examples >= 3`` unless the kernel or the targets' Gram matrix is constant over the pairs of distinct
    examples (e.g. all labels different).

    Args:
        kernel: the ``(B·K, B·K)`` NTK, as in :func:`offdiagonal_alignment`.
        targets: the ``B·K`` target entries.
        num_examples: ``B``.

    Returns:
        ``{form: alignment}`` for the defined forms.

    Example:
        >>> import torch
        >>> y = torch.tensor([1.0, -1.0, 2.0])
        >>> sorted(kernel_alignments(torch.outer(y, y), y, num_examples=3))
        ['alignment', 'alignment_centered', 'alignment_offdiagonal']
    """
    y = targets.detach().reshape(-1).to(torch.float64)
    values = {"alignment": kernel_target_alignment(kernel, y)}
    if float(torch.linalg.vector_norm(y - y.mean())) > 0:
        values["alignment_centered"] = kernel_target_alignment(kernel, y, centered=True)
    if num_examples >= 3:
        _check_offdiagonal_args(kernel, y, num_examples)
        traced, gram = _offdiagonal_parts(kernel, y, num_examples)
        if traced is not None and gram is not None:
            values["alignment_offdiagonal"] = float((traced * gram).sum())
    return values


def ntk_targets(targets: Tensor, num_examples: int, num_outputs: int) -> Tensor:
    """The target vector ``y ∈ R^{B·K}`` matched to the NTK rows (see the docs' implementation notes)."""
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
    offdiagonal: bool = False,
    chunk_size: int | None = None,
) -> float:
    """Kernel-target alignment of the empirical NTK of ``inputs`` (:func:`ntk_matrix`, so ``B·K`` is
    limited to ``NTK_MATRIX_MAX_ROWS``) with ``targets`` (class indices are one-hot encoded, see the module
    docstring); centered when ``centered=True``; between distinct examples (:func:`offdiagonal_alignment`,
    itself centered) when ``offdiagonal=True``.

    Args:
        model: the network; BatchNorm and dropout in eval mode. Left untouched.
        inputs: a tensor whose first dimension indexes the ``B`` examples.
        targets: ``(B,)`` class indices (one-hot encoded to ``K`` outputs) or ``(B, K)`` regression targets.
        output_fn: ``output_fn(model, inputs)`` returns the outputs (default ``model(inputs)``).
        params: parameter names / globs (default: all with ``requires_grad=True``).
        centered: the centered alignment (:func:`kernel_target_alignment`).
        offdiagonal: the alignment between distinct examples (:func:`offdiagonal_alignment`).
        chunk_size: examples per Jacobian block, as in :func:`ntk_matrix`.

    Returns:
        The alignment.

    Raises:
        ValueError: ``B·K`` above ``NTK_MATRIX_MAX_ROWS``, targets that do not match the outputs, or an
            undefined alignment.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
        >>> alignment = ntk_alignment(model, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
        >>> 0.0 <= alignment <= 1.0
        True
    """
    if centered and offdiagonal:
        raise ValueError(
            "`centered` and `offdiagonal` exclude each other (the off-diagonal alignment is a correlation, "
            "centered already): pass at most one."
        )
    kernel = ntk_matrix(model, inputs, output_fn=output_fn, params=params, chunk_size=chunk_size)
    num_examples = inputs.shape[0]
    y = ntk_targets(targets, num_examples, kernel.shape[0] // num_examples)
    if offdiagonal:
        return offdiagonal_alignment(kernel, y, num_examples)
    return kernel_target_alignment(kernel, y, centered=centered)
