"""Maximum-likelihood power-law fit to the tail of a weight matrix's eigenvalue spectrum.

Martin & Mahoney ("Implicit Self-Regularization in Deep Neural Networks", 2021; the WeightWatcher tool) fit
a power law ``ρ(λ) ∝ λ^{-α}`` to the tail of the empirical spectral density (ESD) of the correlation matrix
``WᵀW`` of a layer; its eigenvalues are the squared singular values ``λ_i = σ_i²``. Well-trained layers show
``α`` roughly in ``[2, 6]``; smaller ``α`` means a heavier tail (more strongly correlated weights). Scaling
``W`` (or normalising ``WᵀW`` by a dimension) scales every ``λ_i`` by the same factor and leaves ``α``
unchanged, except where an *absolute* eigenvalue cut applies (``fit="weightwatcher"`` below).

Two fits are offered, selected by ``fit`` (:data:`FITS`):

``fit="default"`` follows Clauset, Shalizi & Newman (2009, "Power-law distributions in empirical data"):

* For a given lower cut-off ``x_min`` the continuous power law ``p(x) = (α−1)/x_min · (x/x_min)^{-α}`` on
  ``x ≥ x_min`` has the maximum-likelihood exponent (their eq. 3.1) over the ``t`` eigenvalues ``≥ x_min``::

      α̂ = 1 + t / Σ_{λ_i ≥ x_min} ln(λ_i / x_min),     standard error (α̂ − 1) / √t.

* ``x_min`` is chosen (``xmin="ks"``) as the candidate that minimises the two-sided Kolmogorov–Smirnov
  distance between the tail's empirical CDF and the fitted model CDF ``F(x) = 1 − (x/x_min)^{1−α̂}``::

      D = max_{x ≥ x_min} |F_emp(x) − F(x)|   (both sides of every step of F_emp).

  Every distinct eigenvalue that leaves at least ``min_tail`` (default 10) eigenvalues in the tail is a
  candidate. All candidates are evaluated at once as a ``(candidates × eigenvalues)`` array in float64, in
  blocks of about 4M entries, so the cost is ``O(r²)`` for ``r`` eigenvalues (0.13 s for ``r = 4096``, 0.5 s
  for ``r = 8192`` on a 2-core CPU). Ties in ``D`` go to the smaller ``x_min`` (the longer tail).
* Eigenvalues at or below the numerical-rank floor ``λ_max·(r·eps)²`` (singular values below
  ``r·eps·σ_max``, the cut-off of ``torch.linalg.matrix_rank``; ``eps`` of the input dtype) are dropped: they
  are rounding noise of a rank-deficient matrix, and ``ln 0`` is undefined. The cut is relative, so ``α``
  does not depend on the scale of ``W``.

``fit="weightwatcher"`` reproduces the fit of WeightWatcher 0.7.7 (``WW_powerlaw.WWFit``, its default
``analyze()`` path, read from its source), where it differs on purpose from the default:

* its cut is absolute: eigenvalues ``≤ 1e-5`` are dropped (:data:`WEIGHTWATCHER_EVALS_THRESH`), whatever the
  scale of ``W`` (a layer whose ``σ²`` all lie below ``1e-5`` is not fitted); no normalisation of ``WᵀW``
  (WeightWatcher's ``normalize`` option has been a no-op since 0.6.5);
* every sorted eigenvalue but the largest is a candidate ``x_min`` (tails down to 2 eigenvalues; repeated
  values are separate candidates), ``min_tail`` is not used;
* its KS distance is one-sided, measured at the lower end of each step only:
  ``D = max_j |F(x_j) − j/t|``, ``j = 0 … t−1``; a candidate with ``α̂ ≤ 1`` gets ``D = 1``;
* with fewer than 20 usable eigenvalues it switches to its small-sample fit: tails of at least 8, the
  bias-corrected ``α̂ = 1 + (t−1)/Σ ln(λ/x_min)``, and ``x_min`` minimising ``D − 0.868/√t``;
* a spectrum of fewer than 8 eigenvalues (its ``min_evals``, counted before the cut) is not fitted.

Short tails make the exponent noisy (its standard error ``(α̂−1)/√t`` is large at ``t = 2``) and can pick a
handful of outliers as "the tail", which is why the default keeps ``min_tail`` eigenvalues and both sides of
the KS steps; use ``"weightwatcher"`` to compare numbers with that tool (``benchmarks/RESULTS.md`` reports the
agreement on random matrices).

A spectrum with fewer than ``min_tail`` (default :data:`DEFAULT_MIN_TAIL` ``= 10``) usable eigenvalues, i.e. a
matrix whose smaller side is below ``min_tail``, gives ``None`` under the default fit: it is skipped, not
reported.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> pareto = (1 - torch.rand(5000, generator=g, dtype=torch.float64)) ** (-1 / 1.5)  # alpha = 2.5
    >>> fit = power_law_alpha(pareto, xmin=1.0)
    >>> round(fit.alpha, 1), fit.num_tail
    (2.5, 5000)
    >>> round(power_law_alpha(pareto, fit="weightwatcher").alpha, 1)
    2.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

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

# Entries of one (candidates x eigenvalues) block of the vectorised KS search (float64: 32 MB per temporary).
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
    """Fit ``ρ(λ) ∝ λ^{-α}`` to the tail of ``eigenvalues`` by maximum likelihood (see the module docstring).

    Args:
        eigenvalues: 1-D tensor of the eigenvalues of ``WᵀW`` (``σ_i²``), any order, any device; the fit runs
            in float64 on the CPU (a few thousand numbers).
        xmin: ``"ks"`` (default) chooses ``x_min`` by minimising the KS distance; a positive number fixes it
            (the tail is every eigenvalue ``≥ xmin``); ``None`` fits the whole usable spectrum
            (``x_min`` = the smallest usable eigenvalue).
        min_tail: smallest tail size accepted (``≥ 2``); also the smallest spectrum that is fitted at all.
            Not used by ``fit="weightwatcher"``, which has its own rules.
        fit: ``"default"`` (Clauset et al. with the safeguards of the module docstring) or
            ``"weightwatcher"`` (WeightWatcher 0.7.7's fit: absolute ``1e-5`` cut, tails down to 2, one-sided
            KS; needs ``xmin="ks"``).

    Returns:
        A :class:`PowerLawFit`, or ``None`` when no tail of at least ``min_tail`` usable eigenvalues exists
        (too small a matrix, or a fixed ``xmin`` above all but a few eigenvalues) or the tail is constant
        (``fit="weightwatcher"``: fewer than 8 eigenvalues, fewer than 2 above ``1e-5``, or a failed fit).

    Raises:
        ValueError: ``eigenvalues`` not 1-D / not floating point / not finite; bad ``xmin``, ``min_tail`` or
            ``fit`` (or a fixed ``xmin`` with ``fit="weightwatcher"``).
    """
    if not isinstance(eigenvalues, Tensor) or eigenvalues.ndim != 1 or not eigenvalues.is_floating_point():
        raise ValueError("`eigenvalues` must be a 1-D floating-point tensor.")
    if not bool(torch.isfinite(eigenvalues).all()):
        raise ValueError("`eigenvalues` must be finite (got NaN or inf).")
    if isinstance(min_tail, bool) or not isinstance(min_tail, int) or min_tail < 2:
        raise ValueError(f"`min_tail` must be an integer >= 2, got {min_tail!r}.")
    fixed_xmin: float | None = None
    if isinstance(xmin, str):
        if xmin != "ks":
            raise ValueError(f"`xmin` must be 'ks', a positive number or None, got {xmin!r}.")
    elif xmin is not None:
        if isinstance(xmin, bool) or not isinstance(xmin, (int, float)) or not (0 < xmin < math.inf):
            raise ValueError(f"`xmin` must be 'ks', a positive number or None, got {xmin!r}.")
        fixed_xmin = float(xmin)
    if fit not in FITS:
        raise ValueError(f"`fit` must be one of {FITS}, got {fit!r}.")
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
    """WeightWatcher 0.7.7's power-law fit (``fit="weightwatcher"``, rules in the module docstring)."""
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
    """WeightWatcher's fit for fewer than 20 eigenvalues: tails of at least 8, the bias-corrected exponent
    ``1 + (t−1)/Σ ln(λ/x_min)``, the candidate of smallest one-sided ``D``; when no tail qualifies, the whole
    spectrum with that exponent. (Its source also scores ``D − 0.868/√t``, but the ``x_min`` and ``α`` it
    returns are then overwritten by those of the smallest ``D``: the latter is what it reports.)"""
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
