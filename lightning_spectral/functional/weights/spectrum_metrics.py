"""The scalar metrics of one matrix computed from its singular values (definitions: the docstring of
:mod:`lightning_spectral.functional.weights.spectrum`).

Example::

    >>> import torch
    >>> round(effective_rank(torch.ones(4, dtype=torch.float64), 0, 0.0), 6)  # four equal values
    4.0
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lightning_spectral.functional.weights.power_law import power_law_alpha

__all__ = ["MASS_FRACTION", "effective_rank", "gini_coefficient", "mass_count", "summarize_singular_values"]

#: ``mass90_count`` counts the leading singular values holding this fraction of ``Σσ``.
MASS_FRACTION = 0.9


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


def mass_count(values: Tensor, fraction: float = MASS_FRACTION) -> int:
    """The fewest leading values (``values`` descending, ``≥ 0``) whose sum reaches ``fraction`` of the total.

    ``min {c : Σ_{i≤c} σ_i ≥ fraction · Σ_i σ_i}``; 0 for all-zero values.

    >>> mass_count(torch.tensor([5.0, 4.0, 1.0]))  # 5 + 4 = 90 % of 10
    2
    """
    values = values.double()
    total = float(values.sum())
    if total <= 0.0:
        return 0
    cumulative = torch.cumsum(values, 0)
    # a relative slack of a few ulps so that a share of exactly `fraction` counts despite rounding
    reached = cumulative >= fraction * total * (1.0 - 4 * torch.finfo(torch.float64).eps)
    return int(torch.nonzero(reached)[0, 0]) + 1


def gini_coefficient(values: Tensor) -> float:
    """Gini coefficient ``Σ_i Σ_j |σ_i − σ_j| / (2 r Σ_i σ_i)`` of ``r`` non-negative values.

    0 when all values are equal, ``1 − 1/r`` when one value holds everything; 0 for all-zero values.

    >>> round(gini_coefficient(torch.tensor([0.0, 0.0, 0.0, 1.0])), 6)
    0.75
    """
    x = torch.sort(values.double()).values
    r, total = x.numel(), float(x.sum())
    if total <= 0.0:
        return 0.0
    # with x ascending, Σ_i Σ_j |x_i − x_j| = 2 Σ_i (2i − r − 1) x_i (i = 1..r)
    weights = 2.0 * torch.arange(1, r + 1, dtype=torch.float64) - r - 1
    return float((weights * x).sum()) / (r * total)


def summarize_singular_values(
    values: Tensor,
    k: int,
    shape: tuple[int, int],
    frobenius: float,
    full: bool,
    min_tail: int,
) -> dict[str, Any]:
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
    stable_rank = fro_sq / sigma_max**2 if sigma_max > 0 else 0.0
    return {
        "sigma_max": sigma_max,
        "frobenius_norm": frobenius,
        "stable_rank": stable_rank,
        "effective_rank": entropy_rank,
        "effective_rank_is_estimate": not full,
        "condition_number": sigma_max / sigma_k if sigma_k > 0 else (math.inf if sigma_max > 0 else math.nan),
        "alpha": None if fit is None else fit.alpha,
        "power_law": fit,
        "stable_rank_ratio": stable_rank / r,
        "effective_rank_ratio": entropy_rank / r if full else None,
        "mass90_count": mass_count(values) if full else None,
        "gini": gini_coefficient(values) if full else None,
    }
