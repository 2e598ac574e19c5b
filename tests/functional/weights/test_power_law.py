"""Tests of the maximum-likelihood power-law fit (Clauset, Shalizi & Newman 2009) with KS-chosen x_min."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_spectral.functional.weights.power_law import DEFAULT_MIN_TAIL, PowerLawFit, power_law_alpha


def _pareto(n: int, alpha: float, xmin: float, seed: int) -> torch.Tensor:
    """``n`` samples of the density ``(α−1)/x_min (x/x_min)^{-α}`` on ``x ≥ x_min`` by inverse CDF."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def _reference_fit(x: torch.Tensor, min_tail: int) -> tuple[float, float, float]:
    """Plain-Python Clauset et al. fit: loop over every distinct x_min, MLE alpha, two-sided KS, argmin."""
    xs = sorted(float(v) for v in x)
    best = (math.inf, math.nan, math.nan)
    for i, xmin in enumerate(xs):
        if i > 0 and xs[i - 1] == xmin:
            continue
        tail = xs[i:]
        t = len(tail)
        if t < min_tail:
            break
        log_sum = sum(math.log(v / xmin) for v in tail)
        if log_sum <= 0:
            continue
        alpha = 1.0 + t / log_sum
        d = 0.0
        for j, v in enumerate(tail):
            model = 1.0 - (v / xmin) ** (1.0 - alpha)
            d = max(d, abs(model - j / t), abs(model - (j + 1) / t))
        if d < best[0]:
            best = (d, alpha, xmin)
    return best


@pytest.mark.parametrize("alpha", [1.8, 2.5, 4.0])
def test_fixed_xmin_recovers_pareto_exponent(alpha: float) -> None:
    x = _pareto(4000, alpha, xmin=2.0, seed=int(alpha * 10))
    fit = power_law_alpha(x, xmin=2.0)
    assert isinstance(fit, PowerLawFit)
    assert fit.num_tail == 4000 and fit.xmin == 2.0
    # the MLE formula itself, in float64
    expected = 1.0 + 4000 / torch.log(x / 2.0).sum().item()
    assert fit.alpha == pytest.approx(expected, rel=1e-12)
    assert fit.alpha_std_error == pytest.approx((expected - 1) / math.sqrt(4000), rel=1e-12)
    # and the estimate is close to the truth: std error (alpha-1)/sqrt(4000) <= 0.05
    assert abs(fit.alpha - alpha) < 0.15


def test_ks_choice_matches_brute_force_reference() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.rand(40, generator=g, dtype=torch.float64) + 0.1, _pareto(35, 2.2, 1.1, seed=4)])
    x = x[torch.randperm(x.numel(), generator=g)]  # order must not matter
    for min_tail in (2, 10, 30):
        fit = power_law_alpha(x, min_tail=min_tail)
        ref_d, ref_alpha, ref_xmin = _reference_fit(x, min_tail)
        assert fit.ks_distance == pytest.approx(ref_d, rel=1e-10)
        assert fit.alpha == pytest.approx(ref_alpha, rel=1e-10)
        assert fit.xmin == ref_xmin
        assert fit.num_tail == int((x >= ref_xmin).sum())


def test_ks_distance_with_ties_matches_reference() -> None:
    x = torch.tensor([1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 5.0, 5.0, 8.0, 13.0, 21.0, 40.0], dtype=torch.float64)
    fit = power_law_alpha(x, min_tail=4)
    ref_d, ref_alpha, ref_xmin = _reference_fit(x, 4)
    assert (fit.ks_distance, fit.alpha, fit.xmin) == pytest.approx((ref_d, ref_alpha, ref_xmin), rel=1e-12)


def test_ks_finds_the_start_of_the_power_law_tail() -> None:
    g = torch.Generator().manual_seed(0)
    bulk = 0.05 + 0.95 * torch.rand(3000, generator=g, dtype=torch.float64)  # uniform on [0.05, 1)
    tail = _pareto(1000, 3.0, xmin=1.0, seed=1)
    fit = power_law_alpha(torch.cat([bulk, tail]))
    assert abs(fit.alpha - 3.0) < 0.3
    assert 0.8 <= fit.xmin <= 1.5
    # fitting the whole spectrum instead is badly off: the bulk is not a power law
    whole = power_law_alpha(torch.cat([bulk, tail]), xmin=None)
    assert whole.num_tail == 4000 and abs(whole.alpha - 3.0) > 1.0


def test_fit_is_scale_invariant() -> None:
    x = _pareto(500, 2.5, 1.0, seed=5)
    a, b = power_law_alpha(x), power_law_alpha(x * 1e-3)
    assert b.alpha == pytest.approx(a.alpha, rel=1e-9)
    assert b.xmin == pytest.approx(a.xmin * 1e-3, rel=1e-12)
    assert b.num_tail == a.num_tail


@pytest.mark.parametrize(("mu", "seed"), [(1.0, 0), (1.5, 1)])
def test_heavy_tailed_matrix_esd_exponent(mu: float, seed: int) -> None:
    """Entries with P(|w| > x) ~ x^{-mu}, mu < 2: the top eigenvalues of WᵀW are ~ w_ij² (single huge
    entries), so P(λ > x) ~ x^{-mu/2} and the ESD tail has alpha = 1 + mu/2 (Martin & Mahoney, 2021)."""
    g = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(400, 800, generator=g) < 0.5, -1.0, 1.0).double()
    w = signs * (1.0 - torch.rand(400, 800, generator=g, dtype=torch.float64)) ** (-1.0 / mu)
    fit = power_law_alpha(torch.linalg.svdvals(w) ** 2)
    assert abs(fit.alpha - (1.0 + mu / 2.0)) < 0.3


def test_float32_input_and_unsorted_order() -> None:
    x = _pareto(2000, 2.5, 1.0, seed=7)
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0))
    f64 = power_law_alpha(x)
    f32 = power_law_alpha(x[perm].float())
    assert f32.alpha == pytest.approx(f64.alpha, rel=1e-4)


def test_too_few_eigenvalues_give_none() -> None:
    x = _pareto(DEFAULT_MIN_TAIL - 1, 2.5, 1.0, seed=0)
    assert power_law_alpha(x) is None
    assert power_law_alpha(_pareto(DEFAULT_MIN_TAIL, 2.5, 1.0, seed=0)) is not None
    # a fixed x_min above all but a few eigenvalues
    assert power_law_alpha(_pareto(100, 2.5, 1.0, seed=0), xmin=1e9) is None
    # a constant spectrum has no tail to fit
    assert power_law_alpha(torch.ones(50)) is None


def test_numerically_zero_eigenvalues_are_dropped() -> None:
    x = _pareto(200, 2.5, 1.0, seed=2)
    padded = torch.cat(
        [x, torch.zeros(30, dtype=torch.float64), torch.full((5,), 1e-40, dtype=torch.float64)]
    )
    fit, ref = power_law_alpha(padded, xmin=None), power_law_alpha(x, xmin=None)
    assert fit.num_tail == 200
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"xmin": "auto"}, "xmin"),
        ({"xmin": -1.0}, "xmin"),
        ({"xmin": math.inf}, "xmin"),
        ({"min_tail": 1}, "min_tail"),
        ({"min_tail": 3.0}, "min_tail"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        power_law_alpha(torch.rand(20) + 0.1, **kwargs)


@pytest.mark.parametrize("bad", [torch.rand(4, 5), torch.arange(20), torch.tensor([1.0, math.nan] * 10)])
def test_bad_eigenvalues_raise(bad: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="`eigenvalues`"):
        power_law_alpha(bad)
