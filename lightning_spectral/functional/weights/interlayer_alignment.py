"""Which weight matrices of a model are consecutive, and how well their singular bases line up.

Example::

    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> from lightning_spectral.functional.weights.matrices import weight_matrices
    >>> [(p.earlier, p.later) for p in consecutive_pairs(weight_matrices(model))]
    [('0.weight', '2.weight')]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_spectral.functional._common.parameter_selection import uncompiled_name
from lightning_spectral.functional.weights.matrices import WeightMatrix
from lightning_spectral.functional.weights.singular_dynamics import alignment_diagonal
from lightning_spectral.functional.weights.spectrum import WeightSpectrum, weight_spectra

__all__ = [
    "AlignmentPair",
    "attention_alignment",
    "attention_modules",
    "consecutive_pairs",
    "input_side",
    "output_side",
    "pair_alignment",
]

_CHAINABLE = {"Linear", "Conv1d", "Conv2d", "Conv3d"}


@dataclass(frozen=True)
class AlignmentPair:
    """Two weight matrices (by reported name), the earlier one feeding the later one."""

    earlier: str
    later: str

    @property
    def name(self) -> str:
        """``"<earlier>-><later>"``, the pair's logged name."""
        return f"{self.earlier}->{self.later}"


def _output_dim(matrix: WeightMatrix) -> int:
    rows, cols = matrix.matrix.shape
    return cols if matrix.module_type in ("Embedding", "EmbeddingBag") else rows


def consecutive_pairs(matrices: Sequence[WeightMatrix]) -> list[AlignmentPair]:
    """Neighbouring matrices that chain (see the docs' implementation notes), in order."""
    pairs = []
    for a, b in zip(matrices, matrices[1:]):
        earlier_ok = a.module_type in _CHAINABLE or a.module_type in ("Embedding", "EmbeddingBag")
        if not earlier_ok or b.module_type not in _CHAINABLE or a.parameter_name == b.parameter_name:
            continue
        if _output_dim(a) == b.matrix.shape[1]:
            pairs.append(AlignmentPair(a.name, b.name))
    return pairs


def output_side(spectrum: WeightSpectrum, module_type: str) -> Tensor:
    """The output-side singular vectors: left ones, right ones for an embedding table (one row per token)."""
    return spectrum.right_vectors if module_type in ("Embedding", "EmbeddingBag") else spectrum.left_vectors


def input_side(spectrum: WeightSpectrum) -> Tensor:
    """The input-side singular vectors (right ones)."""
    return spectrum.right_vectors


def pair_alignment(earlier: WeightSpectrum, earlier_type: str, later: WeightSpectrum) -> Tensor:
    """``|⟨v_{l+1,i}, u_{l,i}⟩|`` for ``i < min(k_l, k_{l+1})`` (CPU, float64)."""
    return alignment_diagonal(output_side(earlier, earlier_type), input_side(later)).to("cpu", torch.float64)


def _attention_blocks(module: nn.MultiheadAttention) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    E = module.embed_dim
    if module.in_proj_weight is not None:
        fused = module.in_proj_weight.detach()
        q, k, v = fused[:E], fused[E : 2 * E], fused[2 * E :]
    else:
        q, k, v = (getattr(module, f"{n}_proj_weight").detach() for n in ("q", "k", "v"))
    return q, k, v, module.out_proj.weight.detach()


def attention_alignment(
    module: nn.MultiheadAttention, name: str, k: int, **spectra_options: Any
) -> dict[str, Tensor]:
    """Per-head query/key and value→output alignment diagonals of one attention module.

    Args:
        module: the attention layer.
        name: its module name; results are named ``<name>.qk[h]`` (head ``h``) and ``<name>.vo``.
        k: singular vectors per matrix (clipped to each matrix's rank).
        spectra_options: passed to :func:`~lightning_spectral.functional.weights.spectrum.weight_spectra`
            (``method``, ``generator``, ...).

    Returns:
        ``{pair name: (k',) diagonal}`` in ``[0, 1]`` (CPU, float64).

    Raises:
        TypeError: ``module`` is not an ``nn.MultiheadAttention``.
    """
    if not isinstance(module, nn.MultiheadAttention):
        raise TypeError(f"`module` must be an nn.MultiheadAttention, got {type(module).__name__}.")
    q, key, v, out = _attention_blocks(module)
    heads, head_dim = module.num_heads, module.head_dim
    # rows h·d:(h+1)·d of W_q / W_k produce head h's queries / keys
    per_head = [q[h * head_dim : (h + 1) * head_dim] for h in range(heads)]
    per_head += [key[h * head_dim : (h + 1) * head_dim] for h in range(heads)]
    spectra = weight_spectra([*per_head, v, out], k, **spectra_options)
    result = {
        f"{name}.qk[{h}]": alignment_diagonal(spectra[h].left_vectors, spectra[heads + h].left_vectors)
        for h in range(heads)
    }
    result[f"{name}.vo"] = alignment_diagonal(spectra[-2].left_vectors, spectra[-1].right_vectors)
    return {pair: diagonal.to("cpu", torch.float64) for pair, diagonal in result.items()}


def attention_modules(
    model: nn.Module, matrices: Sequence[WeightMatrix]
) -> list[tuple[str, nn.MultiheadAttention]]:
    """The ``nn.MultiheadAttention`` modules of ``model`` whose projection weights are among ``matrices``."""
    selected = {m.parameter_name for m in matrices}
    found = []
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.MultiheadAttention):
            continue
        name = uncompiled_name(module_name)
        attr = "in_proj_weight" if module.in_proj_weight is not None else "q_proj_weight"
        if (f"{name}.{attr}" if name else attr) in selected:
            found.append((name, module))
    return found
