"""Maximum-likelihood power-law fit to the tail of a weight matrix's eigenvalue spectrum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_spectral._internal.validation import check_choice, check_int

__all__ = [
    "DEFAULT_MIN_TAIL",
    "FITS",
    "WEIGHTWATCHER_EVALS_THRESH",
    "PowerLawFit",
    "PowerLawFitKind",
    "power_law_alpha",
]

#: Smallest number of eigenvalues a tail (and hence a spectrum) must hold for the default fit.
DEFAULT_MIN_TAIL = 10
#: Allowed values of ``fit``.
PowerLawFitKind = Literal["default", "weightwatcher"]
FITS: tuple[PowerLawFitKind, ...] = get_args(PowerLawFitKind)
#: WeightWatcher's absolute eigenvalue cut (``EVALS_THRESH``): eigenvalues ``<=`` it are dropped.
WEIGHTWATCHER_EVALS_THRESH = 1e-5
# WeightWatcher's smallest fitted spectrum (DEFAULT_MIN_EVALS), its small-sample switch (SMALL_N_CUTOFF) and
# the smallest tail of its small-sample fit (k_min), all from its 0.7.7 source.
_WW_MIN_EVALS = 8
_WW_SMALL_N = 20
_WW_SMALL_N_MIN_TAIL = 8

# Entries of one (candidates x eigenvalues) block of the vectorized KS search (float64: 32 MB per temporary).
_KS_BLOCK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class PowerLawFit:
    """Result of :func:`power_law_alpha`.

    Attributes:
        alpha: maximum-likelihood exponent ``α̂`` of ``ρ(λ) ∝ λ^{-α}`` on the tail.
        xmin: the lower cut-off ``x_min`` of the tail (an eigenvalue when chosen by KS).
        ks_distance: Kolmogorov–Smirnov distance between the tail and the fitted law (two-sided for the
            default fit, WeightWatcher's one-sided one for ``fit="weightwatcher"``).
        num_tail: number of eigenvalues ``≥ x_min`` used in the fit.
        alpha_std_error: ``(α̂ − 1)/√num_tail``, the asymptotic standard error of ``α̂``.

    Example:
        >>> import torch
        >>> fit = power_law_alpha(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64), xmin=1.0, min_tail=5)
        >>> fit.num_tail, fit.xmin
        (5, 1.0)
    """

    alpha: float
    xmin: float
    ks_distance: float
    num_tail: int
    alpha_std_error: float


def _usable_eigenvalues(eigenvalues: Tensor) -> Tensor:
    """Sorted (ascending) float64 CPU copy of the eigenvalues above the numerical-rank floor."""
    eps = torch.finfo(eigenvalues.dtype).eps
    values = eigenvalues.detach().to(device="cpu", dtype=torch.float64)
    if values.numel() == 0:
        return values
    floor = values.max().item() * (values.numel() * eps) ** 2
    values = values[values > max(floor, 0.0)]
    return torch.sort(values).values


def _ks_distances(
    log_x: Tensor, starts: Tensor, log_xmins: Tensor, alphas: Tensor, one_sided: bool = False
) -> Tensor:
    """KS distance of each tail ``log_x[starts[c]:]`` to the power law ``(alphas[c], log_xmins[c])``.

    ``log_x`` is sorted ascending. With ``t = r − start`` and ``j`` the position inside the tail, the empirical
    CDF jumps from ``j/t`` to ``(j+1)/t`` at ``x_j``, so the two-sided distance at ``x_j`` is
    ``max(F(x_j) − j/t, (j+1)/t − F(x_j)) = |F(x_j) − (j+½)/t| + 1/(2t)`` (exact for tied eigenvalues too);
    ``one_sided`` gives WeightWatcher's ``|F(x_j) − j/t|`` instead.
    ``starts`` is increasing, so a block of candidates only needs the columns from its first start on.
    """
    step_offset = 0.0 if one_sided else 0.5
    r = log_x.numel()
    out = torch.empty(starts.numel(), dtype=torch.float64)
    lo = 0
    while lo < starts.numel():
        first = int(starts[lo])
        width = r - first
        block = max(1, _KS_BLOCK_ENTRIES // width)
        s = starts[lo : lo + block]
        inv_t = 1.0 / (r - s).to(torch.float64)
        offset = (s - first).to(torch.float64)  # column index of each candidate's x_min inside the block
        cols = log_x[first:]
        # F = 1 - exp((1 - a) ln(x_j / x_min)), for the columns j of this block.
        cdf_gap = torch.sub(cols.unsqueeze(0), log_xmins[lo : lo + block].unsqueeze(1))
        cdf_gap.mul_((1.0 - alphas[lo : lo + block]).unsqueeze(1)).expm1_().neg_()
        # subtract the midpoint of the empirical CDF step, (j - offset + 1/2) / t (its lower end if one-sided)
        j = torch.arange(width, dtype=torch.float64)
        cdf_gap.sub_(j.unsqueeze(0) * inv_t.unsqueeze(1))
        cdf_gap.add_(((offset - step_offset) * inv_t).unsqueeze(1)).abs_()
        cdf_gap.masked_fill_(j.unsqueeze(0) < offset.unsqueeze(1), -math.inf)  # columns before the tail
        out[lo : lo + block] = cdf_gap.amax(dim=1) + step_offset * inv_t
        lo += block
    return out


def power_law_alpha(
    eigenvalues: Tensor,
    *,
    xmin: Literal["ks"] | float | None = "ks",
    min_tail: int = DEFAULT_MIN_TAIL,
    fit: PowerLawFitKind = "default",
) -> PowerLawFit | None:
    r"""Fit ``ρ(λ) ∝ λ^{-α}`` to the tail of ``eigenvalues`` by maximum likelihood (Clauset et al. 2009).

    For the ``t`` eigenvalues ``λ_i ≥ x_min`` of the tail the estimate and its asymptotic standard error are

    .. math::

        \hat\alpha = 1 + t \Big/ \sum_{i=1}^{t} \ln\frac{\lambda_i}{x_{\min}},
        \qquad \sigma_{\hat\alpha} = \frac{\hat\alpha - 1}{\sqrt{t}},

    with ``x_min`` the candidate that minimizes the Kolmogorov–Smirnov distance (``xmin="ks"``).

    Args:
        eigenvalues: 1-D tensor of the eigenvalues of ``WᵀW`` (``σ_i²``), any order, any device; the fit runs
            in float64 on the CPU (a few thousand numbers).
        xmin: ``"ks"`` (default) chooses ``x_min`` by minimizing the KS distance; a positive number fixes it
            (the tail is every eigenvalue ``≥ xmin``); ``None`` fits the whole usable spectrum
            (``x_min`` = the smallest usable eigenvalue).
        min_tail: smallest tail size accepted (``≥ 2``); also the smallest spectrum that is fitted at all.
            Not used by ``fit="weightwatcher"``, which has its own rules.
        fit: ``"default"`` (Clauset et al. with the safeguards of the docs' implementation notes) or
            ``"weightwatcher"`` (WeightWatcher 0.7.7's fit: absolute ``1e-5`` cut, tails down to 2, one-sided
            KS; needs ``xmin="ks"``).

    Returns:
        A :class:`PowerLawFit`, or ``None`` when no tail of at least ``min_tail`` usable eigenvalues exists
        (too small a matrix, or a fixed ``xmin`` above all but a few eigenvalues) or the tail is constant
        (``fit="weightwatcher"``: fewer than 8 eigenvalues, fewer than 2 above ``1e-5``, or a failed fit).

    Raises:
        ValueError: ``eigenvalues`` not 1-D / not floating point / not finite; bad ``xmin``, ``min_tail`` or
            ``fit`` (or a fixed ``xmin`` with ``fit="weightwatcher"``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> pareto = (1 - torch.rand(5000, generator=g, dtype=torch.float64)) ** (-1 / 1.5)  # alpha = 2.5
        >>> fit = power_law_alpha(pareto, xmin=1.0)
        >>> round(fit.alpha, 1), fit.num_tail
        (2.5, 5000)
        >>> round(power_law_alpha(pareto, fit="weightwatcher").alpha, 1)
        2.5
    """
    if not isinstance(eigenvalues, Tensor) or eigenvalues.ndim != 1 or not eigenvalues.is_floating_point():
        raise ValueError("`eigenvalues` must be a 1-D floating-point tensor.")
    if not bool(torch.isfinite(eigenvalues).all()):
        raise ValueError("`eigenvalues` must be finite (got NaN or inf).")
    check_int("min_tail", min_tail, 2)
    fixed_xmin: float | None = None
    if isinstance(xmin, str):
        if xmin != "ks":
            raise ValueError(f"`xmin` must be 'ks', a positive number or None, got {xmin!r}.")
    elif xmin is not None:
        if isinstance(xmin, bool) or not isinstance(xmin, (int, float)) or not (0 < xmin < math.inf):
            raise ValueError(f"`xmin` must be 'ks', a positive number or None, got {xmin!r}.")
        fixed_xmin = float(xmin)
    check_choice("fit", fit, FITS)
    if fit == "weightwatcher":
        if xmin != "ks":
            raise ValueError(
                f"`xmin` must be 'ks' with fit='weightwatcher' (it searches x_min), got {xmin!r}."
            )
        return _weightwatcher_fit(eigenvalues)

    x = _usable_eigenvalues(eigenvalues)
    r = x.numel()
    if r < min_tail:
        return None
    log_x = torch.log(x)
    # suffix_log_sum[i] = sum_{j >= i} ln x_j
    suffix_log_sum = torch.flip(torch.cumsum(torch.flip(log_x, (0,)), 0), (0,))

    if xmin == "ks":
        first_of_value = torch.ones(r, dtype=torch.bool)
        first_of_value[1:] = x[1:] > x[:-1]
        starts = torch.nonzero(first_of_value[: r - min_tail + 1]).squeeze(1)
    elif fixed_xmin is None:
        starts = torch.zeros(1, dtype=torch.long)
    else:
        starts = torch.searchsorted(x, torch.tensor([fixed_xmin], dtype=torch.float64))
        if r - int(starts[0]) < min_tail:
            return None

    tail_sizes = (r - starts).to(torch.float64)
    if fixed_xmin is not None:
        log_xmin = torch.full_like(tail_sizes, math.log(fixed_xmin))
    else:
        log_xmin = log_x[starts]
    log_excess = suffix_log_sum[starts] - tail_sizes * log_xmin  # sum ln(x / x_min) over each tail
    valid = log_excess > 0
    if not bool(valid.any()):
        return None
    starts, tail_sizes, log_excess, log_xmin = (
        starts[valid],
        tail_sizes[valid],
        log_excess[valid],
        log_xmin[valid],
    )
    alphas = 1.0 + tail_sizes / log_excess

    distances = _ks_distances(log_x, starts, log_xmin, alphas)
    best = int(torch.argmin(distances))
    alpha = float(alphas[best])
    num_tail = int(tail_sizes[best])
    return PowerLawFit(
        alpha=alpha,
        xmin=float(x[starts[best]]) if fixed_xmin is None else fixed_xmin,
        ks_distance=float(distances[best]),
        num_tail=num_tail,
        alpha_std_error=(alpha - 1.0) / math.sqrt(num_tail),
    )


def _weightwatcher_fit(eigenvalues: Tensor) -> PowerLawFit | None:
    """WeightWatcher 0.7.7's power-law fit (``fit="weightwatcher"``, rules in the docs' implementation notes)."""
    if eigenvalues.numel() < _WW_MIN_EVALS:
        return None
    values = eigenvalues.detach().to(device="cpu", dtype=torch.float64)
    x = torch.sort(values[values > WEIGHTWATCHER_EVALS_THRESH]).values
    r = x.numel()
    if r < 2:
        return None
    log_x = torch.log(x)
    suffix_log_sum = torch.flip(torch.cumsum(torch.flip(log_x, (0,)), 0), (0,))
    starts = torch.arange(r - 1)  # every eigenvalue but the largest, ties included
    tail_sizes = (r - starts).to(torch.float64)
    log_xmin = log_x[:-1]
    log_excess = suffix_log_sum[:-1] - tail_sizes * log_xmin
    if r < _WW_SMALL_N:
        return _weightwatcher_small_n_fit(x, log_x, tail_sizes, log_excess)
    alphas = 1.0 + tail_sizes / log_excess
    fitted = (log_excess > 0) & (alphas > 1.0)
    distances = torch.ones(r - 1, dtype=torch.float64)
    if bool(fitted.any()):
        distances[fitted] = _ks_distances(
            log_x, starts[fitted], log_xmin[fitted], alphas[fitted], one_sided=True
        )
    best = int(torch.argmin(distances))
    if not bool(fitted[best]):
        return None
    return _fit_at(x, best, float(alphas[best]), float(distances[best]), int(tail_sizes[best]))


def _weightwatcher_small_n_fit(
    x: Tensor, log_x: Tensor, tail_sizes: Tensor, log_excess: Tensor
) -> PowerLawFit | None:
    """WeightWatcher's fit for fewer than 20 eigenvalues.

    Tails of at least 8, the bias-corrected exponent
    ``1 + (t−1)/Σ ln(λ/x_min)``, the candidate of smallest one-sided ``D``; when no tail qualifies, the whole
    spectrum with that exponent. (Its source also scores ``D − 0.868/√t``, but the ``x_min`` and ``α`` it
    returns are then overwritten by those of the smallest ``D``: the latter is what it reports.)
    """
    bias_corrected = 1.0 + (tail_sizes - 1.0) / log_excess
    admissible = (tail_sizes >= _WW_SMALL_N_MIN_TAIL) & (log_excess > 1e-12) & (bias_corrected > 1.0)
    candidates = torch.nonzero(admissible).squeeze(1)
    if candidates.numel() == 0:  # its fallback: the whole spectrum
        if float(log_excess[0]) <= 1e-12:
            return None
        candidates = torch.zeros(1, dtype=torch.long)
    distances = _ks_distances(
        log_x, candidates, log_x[candidates], bias_corrected[candidates], one_sided=True
    )
    best = int(torch.argmin(distances))
    start = int(candidates[best])
    return _fit_at(x, start, float(bias_corrected[start]), float(distances[best]), int(tail_sizes[start]))


def _fit_at(x: Tensor, start: int, alpha: float, distance: float, num_tail: int) -> PowerLawFit:
    return PowerLawFit(
        alpha=alpha,
        xmin=float(x[start]),
        ks_distance=distance,
        num_tail=num_tail,
        alpha_std_error=(alpha - 1.0) / math.sqrt(num_tail),
    )
