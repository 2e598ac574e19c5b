"""FARMS: the power-law exponent of a weight matrix's ESD without aspect-ratio bias."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_choice, check_int
from lightning_spectral.functional.weights.power_law import (
    DEFAULT_MIN_TAIL,
    FITS,
    WEIGHTWATCHER_EVALS_THRESH,
    PowerLawFit,
    PowerLawFitKind,
    power_law_alpha,
)
from lightning_spectral.linalg.device_fallback import on_cpu_if_unsupported

__all__ = [
    "DEFAULT_NUM_WINDOWS",
    "DEFAULT_SUBMATRIX_SIZE",
    "FARMS_XMIN",
    "FarmsFit",
    "FarmsXmin",
    "farms_alpha",
]

#: Allowed values of ``xmin``: the authors' median rule, or the KS search of the chosen ``fit``.
FarmsXmin = Literal["median", "ks"]
FARMS_XMIN: tuple[FarmsXmin, ...] = get_args(FarmsXmin)

#: Default side of the (square) submatrices: the authors' image-classification setting.
DEFAULT_SUBMATRIX_SIZE = 100
#: Default number of submatrix positions per dimension (at most its square submatrices).
DEFAULT_NUM_WINDOWS = 9
# Largest number of stacked entries decomposed in one batched call (256 MB in float32).
_DEFAULT_MAX_BATCH_NUMEL = 1 << 26


@dataclass(frozen=True)
class FarmsFit:
    """Result of :func:`farms_alpha`.

    Attributes:
        alpha: the power-law exponent of the pooled ESD of the submatrices.
        alpha_std_error: its delete-one-submatrix jackknife standard error.
        power_law: the fit behind ``alpha`` (``x_min``, KS distance, pooled tail size, asymptotic error).
        num_submatrices: number of submatrices sampled.
        submatrix_shape: their shape ``(rows, cols)`` in the weight's orientation.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> wide = torch.randn(100, 800, generator=g) / 800**0.5
        >>> result = farms_alpha(wide, submatrix_size=50, num_windows=4)
        >>> result.num_submatrices, result.submatrix_shape
        (16, (50, 50))
    """

    alpha: float
    alpha_std_error: float
    power_law: PowerLawFit
    num_submatrices: int
    submatrix_shape: tuple[int, int]


def _positions(length: int, window: int, count: int) -> Tensor:
    """Start indices of ``count`` evenly spaced windows of ``window`` in ``[0, length)``, duplicates dropped."""
    if length == window:
        return torch.zeros(1, dtype=torch.long)
    return torch.unique(torch.round(torch.linspace(0, length - window, count, dtype=torch.float64)).long())


def _submatrix_shape(shape: tuple[int, int], size: int, aspect_ratio: float) -> tuple[int, int]:
    short_len, long_len = min(shape), max(shape)
    short = min(size, short_len, int(long_len // aspect_ratio))
    long = int(math.floor(short * aspect_ratio + 1e-9))
    return (long, short) if shape[0] >= shape[1] else (short, long)


def _jackknife_std_error(per_block: Tensor, fit: PowerLawFit) -> float:
    """Delete-one-submatrix jackknife of ``1 + t / Σ ln(λ/x_min)`` at the fitted ``x_min``."""
    blocks = per_block.shape[0]
    if blocks < 2:
        return fit.alpha_std_error
    in_tail = per_block >= fit.xmin
    counts = in_tail.sum(dim=1).to(torch.float64)
    log_excess = torch.where(in_tail, torch.log(per_block / fit.xmin), torch.zeros_like(per_block)).sum(dim=1)
    rest_counts, rest_log = counts.sum() - counts, log_excess.sum() - log_excess
    if bool((rest_log <= 0).any()):
        return math.nan
    leave_one_out = 1.0 + rest_counts / rest_log
    spread = ((leave_one_out - leave_one_out.mean()) ** 2).sum()
    return math.sqrt((blocks - 1) / blocks * float(spread))


def farms_alpha(
    weight: Tensor,
    *,
    submatrix_size: int = DEFAULT_SUBMATRIX_SIZE,
    aspect_ratio: float = 1.0,
    num_windows: int = DEFAULT_NUM_WINDOWS,
    xmin: FarmsXmin = "median",
    fit: PowerLawFitKind = "default",
    min_tail: int = DEFAULT_MIN_TAIL,
    max_batch_numel: int = _DEFAULT_MAX_BATCH_NUMEL,
) -> FarmsFit | None:
    """The FARMS power-law exponent of ``weight``'s ESD, with its standard error.

    FARMS (Fixed-Aspect-Ratio Matrix Subsampling) fits the power law (:func:`power_law_alpha`) to the pooled
    eigenvalues of ``WᵀW``'s overlapping ``s × aspect_ratio·s`` submatrices, so that the exponent is not
    biased by the weight's own aspect ratio.

    Args:
        weight: ``(m, n)`` real floating-point matrix, any device (not modified; decomposed in float32, or
            float64 for float64 weights, on its device).
        submatrix_size: short side ``s`` of the submatrices (``>= 2``), clipped to the weight.
        aspect_ratio: long side / short side of the submatrices (``>= 1``; default 1, square blocks).
        num_windows: submatrix positions per dimension (``>= 1``); at most ``num_windows²`` submatrices.
        xmin: ``"median"`` (the authors' choice: ``x_min`` at the median pooled eigenvalue) or ``"ks"``
            (searched by the KS distance of ``fit``).
        fit: ``"default"`` or ``"weightwatcher"``
            (:data:`~lightning_spectral.functional.weights.power_law.FITS`): the eigenvalue cut and, with
            ``xmin="ks"``, the KS search.
        min_tail: smallest tail of the default fit (see
            :func:`~lightning_spectral.functional.weights.power_law.power_law_alpha`).
        max_batch_numel: cap on the stacked entries of one batched SVD call (``>= 1``).

    Returns:
        A :class:`FarmsFit`, or ``None`` when the pooled spectrum cannot be fitted (see
        :func:`~lightning_spectral.functional.weights.power_law.power_law_alpha`).

    Raises:
        TypeError: ``weight`` not a real floating-point tensor.
        ValueError: ``weight`` not 2-D, empty or not finite; ``submatrix_size``, ``aspect_ratio``,
            ``num_windows``, ``xmin``, ``fit``, ``min_tail`` or ``max_batch_numel`` out of range.

    Example::

        >>> farms_alpha(torch.eye(4)) is None  # 4 eigenvalues: too few to fit
        True
    """
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.is_complex():
        raise TypeError(f"`weight` must be a real floating-point torch.Tensor, got {type(weight).__name__}.")
    if weight.ndim != 2 or weight.numel() == 0:
        raise ValueError(f"`weight` must be a non-empty 2-D matrix, got shape {tuple(weight.shape)}.")
    submatrix_size = check_int("submatrix_size", submatrix_size, 2)
    num_windows = check_int("num_windows", num_windows, 1)
    min_tail = check_int("min_tail", min_tail, 2)
    max_batch_numel = check_int("max_batch_numel", max_batch_numel, 1)
    if (
        isinstance(aspect_ratio, bool)
        or not isinstance(aspect_ratio, (int, float))
        or not (1.0 <= aspect_ratio < math.inf)
    ):
        raise ValueError(f"`aspect_ratio` must be a finite number >= 1, got {aspect_ratio!r}.")
    check_choice("fit", fit, FITS)
    check_choice("xmin", xmin, FARMS_XMIN)
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("`weight` contains non-finite values (NaN or inf).")

    m, n = int(weight.shape[0]), int(weight.shape[1])
    rows, cols = _submatrix_shape((m, n), submatrix_size, float(aspect_ratio))
    row_starts = _positions(m, rows, num_windows).to(weight.device)
    col_starts = _positions(n, cols, num_windows).to(weight.device)
    row_index = row_starts[:, None] + torch.arange(rows, device=weight.device)  # (R, rows)
    col_index = col_starts[:, None] + torch.arange(cols, device=weight.device)  # (C, cols)
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    source = weight.detach()

    num_blocks = row_index.shape[0] * col_index.shape[0]
    pairs = torch.cartesian_prod(torch.arange(row_index.shape[0]), torch.arange(col_index.shape[0]))
    per_chunk = max(1, max_batch_numel // (rows * cols))
    spectra = []
    for start in range(0, num_blocks, per_chunk):
        chunk = pairs[start : start + per_chunk].to(weight.device)
        blocks = source[row_index[chunk[:, 0]][:, :, None], col_index[chunk[:, 1]][:, None, :]].to(dtype)
        singular = on_cpu_if_unsupported(torch.linalg.svdvals, blocks)
        spectra.append(singular.to(device="cpu") ** 2)
    # (K, min(rows, cols)) eigenvalues of each block's Gram matrix, in the compute dtype (its rank floor)
    per_block = torch.cat(spectra)
    pooled = per_block.flatten()
    if xmin == "ks":
        result = power_law_alpha(pooled, min_tail=min_tail, fit=fit)
    else:
        if fit == "weightwatcher":
            pooled = pooled[pooled > WEIGHTWATCHER_EVALS_THRESH]
        usable = torch.sort(pooled[pooled > 0]).values
        if usable.numel() < min_tail:
            return None
        result = power_law_alpha(pooled, xmin=float(usable[usable.numel() // 2]), min_tail=min_tail)
    if result is None:
        return None
    per_block = per_block.to(torch.float64)
    return FarmsFit(
        alpha=result.alpha,
        alpha_std_error=_jackknife_std_error(per_block, result),
        power_law=result,
        num_submatrices=num_blocks,
        submatrix_shape=(rows, cols),
    )
