"""The scalar metrics of one matrix computed from its singular values (definitions: the docstring of
:mod:`lightning_spectral.functional.weight_spectrum`).

``stable_rank = ‖W‖_F² / σ_1²``; ``effective_rank = exp(H(p))``, ``p_i = σ_i / Σ_j σ_j`` (Roy & Vetterli 2007),
with an unknown tail of known mass spread evenly when only the top ``k`` values are known;
``condition_number = σ_1 / σ_k``; ``alpha`` the power-law exponent of the tail of ``σ²`` (fitted only from
all the values).

Example::

    >>> import torch
    >>> round(effective_rank(torch.ones(4, dtype=torch.float64), 0, 0.0), 6)  # four equal values
    4.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_spectral.functional.power_law import power_law_alpha

__all__ = ["effective_rank", "summarise_singular_values"]


def effective_rank(top: Tensor, tail_count: int, tail_mass: float) -> float:
    """``exp(H)`` of ``σ/Σσ`` for the known values ``top`` plus ``tail_count`` values ``sqrt(mass/count)``."""
    sigma_tail = math.sqrt(tail_mass / tail_count) if tail_count > 0 else 0.0
    total = float(top.sum()) + tail_count * sigma_tail
    if total <= 0.0:
        return 0.0
    p = top / total
    entropy = -float(torch.special.xlogy(p, p).sum())
    if sigma_tail > 0.0:
        p_tail = sigma_tail / total
        entropy -= tail_count * p_tail * math.log(p_tail)
    return math.exp(entropy)


def summarise_singular_values(
    values: Tensor,
    k: int,
    shape: tuple[int, int],
    frobenius: float,
    full: bool,
    min_tail: int,
) -> dict[str, object]:
    """Scalar metrics of one matrix from its (all or top-k) singular values (CPU, compute dtype).

    The sums run in float64; the power-law fit gets the eigenvalues in the compute dtype so that its
    numerical-rank floor matches the precision the singular values were computed in.
    """
    r = min(shape)
    eigenvalues = values**2
    values = values.double()
    top = values[:k]
    sigma_max = float(top[0])
    fro_sq = frobenius * frobenius
    if full:
        entropy_rank = effective_rank(values, 0, 0.0)
        fit = power_law_alpha(eigenvalues, min_tail=min_tail) if r >= min_tail else None
    else:
        tail_mass = max(fro_sq - float((top**2).sum()), 0.0)
        entropy_rank = effective_rank(top, r - k, tail_mass)
        fit = None
    sigma_k = float(top[-1])
    return {
        "sigma_max": sigma_max,
        "frobenius_norm": frobenius,
        "stable_rank": fro_sq / sigma_max**2 if sigma_max > 0 else 0.0,
        "effective_rank": entropy_rank,
        "effective_rank_is_estimate": not full,
        "condition_number": sigma_max / sigma_k if sigma_k > 0 else (math.inf if sigma_max > 0 else math.nan),
        "alpha": None if fit is None else fit.alpha,
        "power_law": fit,
    }
