"""Tests of the maximum-likelihood power-law fit (Clauset, Shalizi & Newman 2009) with KS-chosen x_min.

``power_law_alpha(fit="weightwatcher")`` against a plain-Python reading of WeightWatcher 0.7.7's rules, and
against WeightWatcher's own ``WWFit`` where it is installed (the ``bench`` extra).
"""

from __future__ import annotations

import contextlib
import io
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


# ------------------------------------------------------------------------------------ against WeightWatcher
def _reference(eigenvalues: torch.Tensor) -> tuple[float, float, int] | None:
    """WeightWatcher's rules, one candidate at a time: absolute 1e-5 cut; every eigenvalue but the largest a
    candidate; MLE exponent (bias-corrected, tails >= 8, for fewer than 20 eigenvalues); one-sided KS
    |F(x_j) - j/t|; D = 1 for an inadmissible candidate; the first smallest D."""
    if eigenvalues.numel() < 8:
        return None
    xs = sorted(float(v) for v in eigenvalues if float(v) > 1e-5)
    n_all = len(xs)
    small = n_all < 20
    best = (math.inf, math.nan, 0, -1)
    for i, xmin in enumerate(xs[:-1]):
        tail = xs[i:]
        t = len(tail)
        log_sum = sum(math.log(v / xmin) for v in tail)
        d = 1.0
        alpha = math.nan
        if small:
            if t >= 8 and log_sum > 1e-12:
                alpha = 1.0 + (t - 1) / log_sum
        elif log_sum > 0:
            alpha = 1.0 + t / log_sum
        if alpha > 1.0:
            d = max(abs(1.0 - (v / xmin) ** (1.0 - alpha) - j / t) for j, v in enumerate(tail))
        if d < best[0]:
            best = (d, alpha, t, i)
    if small and best[3] < 0 or (small and best[0] == 1.0):
        log_sum = sum(math.log(v / xs[0]) for v in xs)
        return 1.0 + (n_all - 1) / log_sum, xs[0], n_all
    return best[1], xs[best[3]], best[2]


def _random_spectra(count: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    shapes = [(50, 30), (12, 15), (40, 18), (9, 30), (64, 64)]
    out = []
    for k in range(count):
        m, n = shapes[k % len(shapes)]
        if k % 2:
            w = torch.distributions.StudentT(2.0).sample((m, n)).double()
        else:
            w = torch.randn(m, n, generator=g, dtype=torch.float64)
        out.append(torch.linalg.svdvals(w / math.sqrt(n)) ** 2)
    return out


@pytest.mark.parametrize("index", range(20))
def test_matches_plain_python_reading_of_weightwatcher(index: int) -> None:
    eigenvalues = _random_spectra(20)[index]
    fit = power_law_alpha(eigenvalues, fit="weightwatcher")
    alpha, xmin, num_tail = _reference(eigenvalues)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.xmin == xmin and fit.num_tail == num_tail
    assert fit.alpha_std_error == pytest.approx((alpha - 1) / math.sqrt(num_tail), rel=1e-10)


def test_matches_weightwatcher_itself() -> None:
    ww_powerlaw = pytest.importorskip("weightwatcher.WW_powerlaw")
    spectra = _random_spectra(100)
    for eigenvalues in spectra:
        nonzero = eigenvalues.numpy()
        with contextlib.redirect_stdout(io.StringIO()):  # it prints on its small-sample path
            reference = ww_powerlaw.WWFit(nonzero[nonzero > 1e-5])
        fit = power_law_alpha(eigenvalues, fit="weightwatcher")
        assert fit.alpha == pytest.approx(float(reference.alpha), rel=1e-10)
        assert fit.xmin == float(reference.xmin)
        assert fit.ks_distance == pytest.approx(float(reference.D), rel=1e-9)


def test_differs_from_default_where_documented() -> None:
    # the absolute cut: a matrix scaled so that every eigenvalue is below 1e-5 is not fitted by WeightWatcher
    eigenvalues = _random_spectra(1)[0]
    assert power_law_alpha(eigenvalues * 1e-7, fit="weightwatcher") is None
    default = power_law_alpha(eigenvalues * 1e-7)
    assert default.alpha == pytest.approx(power_law_alpha(eigenvalues).alpha, rel=1e-9)
    # tails shorter than min_tail are WeightWatcher candidates: a spectrum of 12 values with 3 far outliers
    spectrum = torch.cat([torch.linspace(1.0, 1.5, 9, dtype=torch.float64), torch.tensor([50.0, 60.0, 80.0])])
    assert power_law_alpha(spectrum, fit="weightwatcher").num_tail >= 8  # small-sample rule: tails >= 8
    assert power_law_alpha(spectrum, min_tail=10).num_tail >= 10
    # fewer than 8 eigenvalues: not fitted
    assert power_law_alpha(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]), fit="weightwatcher") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"fit": "ww"}, "`fit` must be one of"), ({"fit": "weightwatcher", "xmin": 1.0}, "`xmin` must be 'ks'")],
)
def test_bad_fit_arguments_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        power_law_alpha(torch.rand(20, dtype=torch.float64) + 0.1, **kwargs)
