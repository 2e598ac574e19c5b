"""Singular-vector dynamics as Yunis et al. (2024, "Approaching Deep Learning through the Spectral Dynamics of
Weights") measure them: agreement of singular vectors across time, index by index, and alignment between
consecutive layers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_int

__all__ = [
    "AGREEMENT_TOP",
    "agreement_score",
    "alignment_diagonal",
    "singular_vector_agreement",
    "thin_singular_vectors",
]

#: The layer score is the mean of this many leading diagonal entries (Yunis et al.).
AGREEMENT_TOP = 10


def _check_vectors(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(value).__name__}.")
    if value.ndim < 2 or not value.is_floating_point():
        raise ValueError(
            f"`{name}` must be a real (..., d, k) matrix of column vectors, got {tuple(value.shape)}."
        )
    return value


def singular_vector_agreement(U: Tensor, V: Tensor, U_ref: Tensor, V_ref: Tensor) -> Tensor:
    """Per-index agreement ``|⟨u_i, u_ref,i⟩ ⟨v_i, v_ref,i⟩|``, the diagonal of ``|(UᵀU_ref) ⊙ (VᵀV_ref)|``.

    Args:
        U: ``(..., m, k)`` left singular vectors (columns), leading ones first.
        V: ``(..., n, k)`` right singular vectors.
        U_ref: ``(..., m, k_ref)`` the reference's left singular vectors.
        V_ref: ``(..., n, k_ref)`` the reference's right singular vectors.

    Returns:
        ``(..., min(k, k_ref))`` agreements in ``[0, 1]`` (for orthonormal columns), in ``U``'s dtype and device.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: the shapes do not match (rows of ``U``/``U_ref``, ``V``/``V_ref``; equal ``k`` per side).

    Example:
        >>> U, V = torch.eye(3)[:, :2], torch.eye(3)[:, :2]
        >>> swapped = U[:, [1, 0]]  # σ_1 and σ_2 trade places
        >>> singular_vector_agreement(swapped, V[:, [1, 0]], U, V).tolist()
        [0.0, 0.0]
        >>> singular_vector_agreement(U, -V, -U, V).tolist()  # joint sign flips do not count
        [1.0, 1.0]
    """
    U, V, U_ref, V_ref = (
        _check_vectors(n, x) for n, x in zip(("U", "V", "U_ref", "V_ref"), (U, V, U_ref, V_ref))
    )
    if U.shape[-2] != U_ref.shape[-2] or V.shape[-2] != V_ref.shape[-2]:
        raise ValueError(
            f"`U`/`U_ref` and `V`/`V_ref` must have equal rows, got {tuple(U.shape)}, {tuple(U_ref.shape)}, "
            f"{tuple(V.shape)}, {tuple(V_ref.shape)}."
        )
    if U.shape[-1] != V.shape[-1] or U_ref.shape[-1] != V_ref.shape[-1]:
        raise ValueError("`U` and `V` (and `U_ref` and `V_ref`) must hold the same number of vectors.")
    k = min(U.shape[-1], U_ref.shape[-1])
    U_ref, V_ref = U_ref.to(U.device, U.dtype), V_ref.to(U.device, U.dtype)
    left = (U[..., :k] * U_ref[..., :k]).sum(-2)
    right = (V[..., :k] * V_ref[..., :k]).sum(-2)
    return (left * right).abs()


def alignment_diagonal(outputs: Tensor, inputs: Tensor) -> Tensor:
    """Diagonal of ``|inputsᵀ outputs|``: ``|⟨v_{l+1,i}, u_{l,i}⟩|`` for ``i < min(k_l, k_{l+1})``.

    Args:
        outputs: ``(..., d, k_l)`` output-side singular vectors of the earlier layer (``U_l``).
        inputs: ``(..., d, k_{l+1})`` input-side singular vectors of the later layer (``V_{l+1}``).

    Returns:
        ``(..., min(k_l, k_{l+1}))`` alignments in ``[0, 1]``.

    Raises:
        ValueError: the two sides live in spaces of different dimension ``d``.
    """
    outputs, inputs = _check_vectors("outputs", outputs), _check_vectors("inputs", inputs)
    if outputs.shape[-2] != inputs.shape[-2]:
        raise ValueError(
            f"the earlier layer's output dimension ({outputs.shape[-2]}) differs from the later layer's input "
            f"dimension ({inputs.shape[-2]}): they are not consecutive."
        )
    k = min(outputs.shape[-1], inputs.shape[-1])
    inputs = inputs.to(outputs.device, outputs.dtype)
    return (outputs[..., :k] * inputs[..., :k]).sum(-2).abs()


def agreement_score(diagonal: Tensor, top: int = AGREEMENT_TOP) -> float:
    """Mean of the first ``min(top, len)`` entries of a 1-D agreement or alignment diagonal (NaN if empty).

    Args:
        diagonal: 1-D tensor, e.g. from :func:`singular_vector_agreement`.
        top: how many leading entries to average (``>= 1``).

    Returns:
        The mean, ``nan`` for an empty diagonal.

    Raises:
        ValueError: ``diagonal`` is not a 1-D tensor, or ``top`` is not a positive integer.

    Example:
        >>> agreement_score(torch.tensor([1.0, 0.5, 0.0]), top=2)
        0.75
    """
    if not isinstance(diagonal, Tensor) or diagonal.ndim != 1:
        raise ValueError("`diagonal` must be a 1-D tensor.")
    check_int("top", top, 1)
    head = diagonal[:top]
    return float(head.double().mean()) if head.numel() else float("nan")


def thin_singular_vectors(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, V)`` of the thin SVD of a (batch of) matrices in float64 on the CPU (``V`` as columns)."""
    U, S, Vh = torch.linalg.svd(matrix.detach().to("cpu", torch.float64), full_matrices=False)
    return U, S, Vh.mT
