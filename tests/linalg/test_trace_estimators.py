"""Hutchinson and Hutch++ against the exact trace of matrices with known spectra ``Q diag(λ) Qᵀ``."""

from __future__ import annotations

import math

import pytest
import torch
from spectral_testing.problems import CountingMatvec, seeded

from lightning_spectral.linalg import hutchinson_trace, hutchpp_trace, mean_and_std_error, rademacher

F64 = torch.float64
ESTIMATORS = {"hutchinson": hutchinson_trace, "hutchpp": hutchpp_trace}


def _indefinite_spectrum(dim: int) -> torch.Tensor:
    """A few large eigenvalues of both signs plus a bulk: a typical loss-Hessian shape."""
    bulk = torch.linspace(-0.5, 1.0, dim - 4, dtype=F64)
    return torch.cat([torch.tensor([20.0, 8.0, -6.0, 3.0], dtype=F64), bulk])


@pytest.fixture(scope="module")
def indefinite(symmetric_with_eigenvalues):
    spectrum = _indefinite_spectrum(60)
    return symmetric_with_eigenvalues(spectrum, seed=1), float(spectrum.sum())


@pytest.mark.parametrize("name", ["hutchinson", "hutchpp"])
def test_unbiased_over_many_seeds(indefinite, name):
    """The mean of 300 independent estimates is within 4 standard errors (of that mean) of tr(A)."""
    A, trace = indefinite
    estimates = torch.tensor(
        [
            ESTIMATORS[name](lambda v: A @ v, 60, 15, dtype=F64, generator=seeded(s)).estimate
            for s in range(300)
        ],
        dtype=F64,
    )
    mean, se_of_mean = mean_and_std_error(estimates)
    assert abs(mean - trace) <= 4 * se_of_mean
    assert se_of_mean > 0  # the estimator is genuinely random here


@pytest.mark.parametrize("name, num_matvecs", [("hutchinson", 40), ("hutchpp", 45)])
def test_std_error_is_honest(indefinite, name, num_matvecs):
    """Coverage of the 95% normal interval over 200 seeds, and the reported standard error agrees with the
    spread of the estimates across seeds."""
    A, trace = indefinite
    results = [
        ESTIMATORS[name](lambda v: A @ v, 60, num_matvecs, dtype=F64, generator=seeded(s)) for s in range(200)
    ]
    estimates = torch.tensor([r.estimate for r in results], dtype=F64)
    std_errors = torch.tensor([r.std_error for r in results], dtype=F64)
    coverage = float(((estimates - trace).abs() <= 1.96 * std_errors).double().mean())
    # Binomial(200, 0.95) has standard deviation 1.5%; the band also allows for the t-distribution of a
    # standard error estimated from 15-40 samples (nominal coverage 93-94%).
    assert 0.88 <= coverage <= 0.99, coverage
    # Root-mean-square reported standard error vs the empirical standard deviation across seeds.
    ratio = float(std_errors.pow(2).mean().sqrt() / estimates.std())
    assert 0.8 <= ratio <= 1.25, ratio


def test_hutchpp_has_lower_variance_on_a_low_rank_dominated_matrix(symmetric_with_eigenvalues):
    dim, budget = 80, 30
    spectrum = torch.cat(
        [torch.tensor([100.0, 60.0, 40.0, 25.0, 10.0], dtype=F64), torch.full((dim - 5,), 0.01)]
    )
    A = symmetric_with_eigenvalues(spectrum, seed=2)
    trace = float(spectrum.sum())

    def spread(estimator) -> float:
        estimates = torch.tensor(
            [
                estimator(lambda v: A @ v, dim, budget, dtype=F64, generator=seeded(s)).estimate
                for s in range(100)
            ],
            dtype=F64,
        )
        return float((estimates - trace).pow(2).mean().sqrt())

    hutchinson_error = spread(hutchinson_trace)
    hutchpp_error = spread(hutchpp_trace)
    # The sketch of 10 columns captures the 5 large eigenvalues; only the 0.01 bulk remains.
    assert hutchpp_error < 0.01 * hutchinson_error
    assert hutchinson_error > 1.0


def test_hutchpp_is_exact_when_the_budget_covers_the_space(indefinite):
    A, trace = indefinite
    matvec = CountingMatvec(A)
    result = hutchpp_trace(matvec, 60, 60, dtype=F64, generator=seeded(0))
    assert result.std_error == 0.0
    assert result.num_matvecs == matvec.calls == 60
    assert result.estimate == pytest.approx(trace, rel=1e-13)
    larger = hutchpp_trace(lambda v: A @ v, 60, 500, dtype=F64)
    assert larger.num_matvecs == 60 and larger.estimate == pytest.approx(trace, rel=1e-13)


def test_hutchpp_sketch_of_a_low_rank_matrix_is_exact(symmetric_with_eigenvalues):
    """rank(A) = 3 <= sketch size 4: QQᵀ captures range(A), the deflated part is zero."""
    spectrum = torch.cat([torch.tensor([5.0, -2.0, 1.0], dtype=F64), torch.zeros(47, dtype=F64)])
    A = symmetric_with_eigenvalues(spectrum, seed=3)
    result = hutchpp_trace(lambda v: A @ v, 50, 12, dtype=F64, generator=seeded(0))
    assert result.estimate == pytest.approx(4.0, abs=1e-12)
    assert result.std_error < 1e-12


def test_hutchinson_is_exact_on_diagonal_matrices():
    """Rademacher probes have z_i² = 1, so zᵀ D z = tr(D) for every probe."""
    d = torch.linspace(-3.0, 7.0, 25, dtype=F64)
    result = hutchinson_trace(lambda v: d * v, 25, 5, dtype=F64, generator=seeded(0))
    assert result.estimate == pytest.approx(float(d.sum()), rel=1e-14)
    assert result.std_error == pytest.approx(0.0, abs=1e-14)


@pytest.mark.parametrize("budget", [3, 10, 31])
def test_matvec_accounting(indefinite, budget):
    A, _ = indefinite
    for estimator in (hutchinson_trace, hutchpp_trace):
        matvec = CountingMatvec(A)
        result = estimator(matvec, 60, budget, dtype=F64, generator=seeded(0))
        assert result.num_matvecs == matvec.calls == budget
    single = hutchpp_trace(lambda v: A @ v, 60, 3, dtype=F64, generator=seeded(0))
    assert math.isnan(single.std_error)  # one Hutchinson probe: no standard error


def test_single_probe_hutchinson_has_nan_std_error(indefinite):
    A, _ = indefinite
    result = hutchinson_trace(lambda v: A @ v, 60, 1, dtype=F64, generator=seeded(0))
    assert math.isfinite(result.estimate) and math.isnan(result.std_error) and result.num_matvecs == 1


def test_float32_and_global_rng(indefinite):
    A, trace = indefinite
    A32 = A.float()
    torch.manual_seed(0)
    first = hutchpp_trace(lambda v: A32 @ v, 60, 30)
    torch.manual_seed(0)
    second = hutchpp_trace(lambda v: A32 @ v, 60, 30)
    assert first == second
    assert abs(first.estimate - trace) <= 5 * first.std_error + 1e-4 * abs(trace)


def test_mean_and_std_error():
    samples = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=F64)
    mean, se = mean_and_std_error(samples)
    assert mean == pytest.approx(3.5)
    assert se == pytest.approx(math.sqrt(((samples - 3.5) ** 2).sum().item() / 3) / 2)
    mean, se = mean_and_std_error(torch.tensor([2.5]))
    assert mean == 2.5 and math.isnan(se)
    for bad in (torch.tensor([]), torch.ones(2, 2), [1.0, 2.0]):
        with pytest.raises(ValueError, match=r"`samples` must be a non-empty 1-D tensor"):
            mean_and_std_error(bad)


def test_rademacher():
    z = rademacher((4, 1000), dtype=F64, generator=seeded(0))
    assert z.shape == (4, 1000) and z.dtype == F64
    assert set(z.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(z.mean())) < 0.1  # 4000 fair signs: standard deviation 0.016
    assert torch.equal(z, rademacher((4, 1000), dtype=F64, generator=seeded(0)))
    assert rademacher(3).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match=r"`shape`"):
        rademacher((2, -1))
    with pytest.raises(ValueError, match=r"`dtype` must be a real floating-point torch.dtype"):
        rademacher(3, dtype=torch.int32)


@pytest.mark.parametrize("name, minimum", [("hutchinson", 1), ("hutchpp", 3)])
def test_invalid_arguments(name, minimum):
    estimator = ESTIMATORS[name]
    with pytest.raises(ValueError, match=rf"`num_matvecs` must be >= {minimum}"):
        estimator(lambda v: v, 10, minimum - 1)
    with pytest.raises(TypeError, match=r"`num_matvecs` must be an int"):
        estimator(lambda v: v, 10, 5.0)
    with pytest.raises(ValueError, match=r"`dim` must be >= 1"):
        estimator(lambda v: v, 0, 5)
    with pytest.raises(TypeError, match=r"`matvec` must be callable"):
        estimator(None, 10, 5)
    with pytest.raises(ValueError, match=r"`dtype` must be a real floating-point torch.dtype"):
        estimator(lambda v: v, 10, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"`matvec` must return a tensor of shape \(10,\)"):
        estimator(lambda v: v[:3], 10, 5)
