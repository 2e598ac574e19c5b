"""Stochastic Lanczos quadrature against exact moments ``qᵀ A^p q`` of matrices with known spectra."""

from __future__ import annotations

import pytest
import torch

from lightning_spectral.linalg import SpectralDensity, gaussian_smoothed_density, rademacher, slq_density

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _exact_moments(A: torch.Tensor, q: torch.Tensor, max_power: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``qᵀ A^p q`` and ``qᵀ |A|^p q`` for ``p = 0..max_power`` (``q`` unit norm), by eigendecomposition."""
    lam, U = torch.linalg.eigh(A)
    mass = (U.T @ q) ** 2
    powers = torch.arange(max_power + 1, dtype=F64)[:, None]
    return (mass * lam**powers).sum(1), (mass * lam.abs() ** powers).sum(1)


def _quadrature_moments(nodes: torch.Tensor, weights: torch.Tensor, max_power: int) -> torch.Tensor:
    powers = torch.arange(max_power + 1, dtype=F64)[:, None]
    return (weights * nodes**powers).sum(1)


@pytest.fixture(scope="module")
def bulk_matrix(symmetric_with_eigenvalues):
    spectrum = torch.cat([torch.tensor([3.0, -2.0], dtype=F64), torch.linspace(-1.0, 1.5, 78, dtype=F64)])
    return symmetric_with_eigenvalues(spectrum, seed=1), spectrum


def test_gauss_quadrature_is_exact_up_to_degree_2m_minus_1(bulk_matrix):
    A, spectrum = bulk_matrix
    num_probes, m = 3, 6
    density = slq_density(
        lambda v: A @ v, 80, num_probes=num_probes, num_steps=m, dtype=F64, generator=_gen(5)
    )
    probes = rademacher((num_probes, 80), dtype=F64, generator=_gen(5))  # documented: the first draw
    assert density.nodes.shape == density.weights.shape == (num_probes, m)
    for p in range(num_probes):
        q = probes[p] / probes[p].norm()
        exact, absolute = _exact_moments(A, q, 2 * m)
        quadrature = _quadrature_moments(density.nodes[p], density.weights[p] * num_probes, 2 * m)
        error = (quadrature - exact).abs() / absolute
        assert float(error[: 2 * m].max()) <= 1e-10, error  # measured: <= 1e-14
        # Degree 2m is not integrated exactly (80 distinct eigenvalues > m nodes): the test can tell.
        assert float(error[2 * m]) > 1e-5  # measured: 1e-4 .. 5e-4


def test_explicit_probes_give_the_same_rule(bulk_matrix):
    A, _ = bulk_matrix
    probes = torch.randn(2, 80, generator=_gen(1), dtype=F64)
    density = slq_density(lambda v: A @ v, 80, num_probes=2, num_steps=6, probes=probes)
    for p in range(2):
        q = probes[p] / probes[p].norm()
        exact, absolute = _exact_moments(A, q, 11)
        quadrature = _quadrature_moments(density.nodes[p], density.weights[p] * 2, 11)
        assert float(((quadrature - exact).abs() / absolute).max()) <= 1e-8


def test_weights_and_nodes(bulk_matrix):
    A, spectrum = bulk_matrix
    density = slq_density(lambda v: A @ v, 80, num_probes=4, num_steps=20, dtype=F64, generator=_gen(2))
    assert float(density.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(density.weights.sum(1), torch.full((4,), 0.25, dtype=F64), atol=1e-12, rtol=0)
    assert bool((density.weights >= 0).all())
    assert float(density.nodes.min()) >= float(spectrum.min()) - 1e-10
    assert float(density.nodes.max()) <= float(spectrum.max()) + 1e-10
    # 20 steps find the isolated extreme eigenvalues.
    assert float(density.nodes.max()) == pytest.approx(3.0, abs=1e-8)
    assert float(density.nodes.min()) == pytest.approx(-2.0, abs=1e-8)


def test_smoothed_density_integrates_to_one(bulk_matrix):
    A, _ = bulk_matrix
    density = slq_density(lambda v: A @ v, 80, num_probes=4, num_steps=20, dtype=F64, generator=_gen(3))
    sigma = 0.05
    grid = torch.linspace(-2.0 - 8 * sigma, 3.0 + 8 * sigma, 4001, dtype=F64)
    values = density.smoothed(grid, sigma)
    assert values.shape == grid.shape and bool((values >= 0).all())
    assert float(torch.trapezoid(values, grid)) == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(gaussian_smoothed_density(density, grid, sigma), values, rtol=0, atol=0)
    # A single point mass gives the normal density.
    point = SpectralDensity(nodes=torch.tensor([[0.5]], dtype=F64), weights=torch.tensor([[1.0]], dtype=F64))
    normal = torch.exp(-0.5 * ((grid - 0.5) / sigma) ** 2) / (sigma * (2 * torch.pi) ** 0.5)
    torch.testing.assert_close(point.smoothed(grid, sigma), normal, rtol=1e-12, atol=1e-300)


def test_averaged_moments_are_unbiased(bulk_matrix):
    """E[Σ w θ^p] = tr(A^p)/dim for Rademacher probes; check p = 1, 2, 3 within 4 standard errors."""
    A, spectrum = bulk_matrix
    num_probes = 200
    density = slq_density(
        lambda v: A @ v, 80, num_probes=num_probes, num_steps=3, dtype=F64, generator=_gen(4)
    )
    for p in (1, 2, 3):
        per_probe = num_probes * (density.weights * density.nodes**p).sum(1)
        mean = float(per_probe.mean())
        std_error = float(per_probe.std()) / num_probes**0.5
        assert abs(mean - float((spectrum**p).mean())) <= 4 * std_error


def test_invariant_krylov_space_pads_with_zero_weight(symmetric_with_eigenvalues):
    """Rank 3: each probe's Krylov space is invariant after 4 steps; the remaining nodes carry no weight and
    the rule reproduces the probe's spectral measure exactly (every moment)."""
    spectrum = torch.cat([torch.tensor([4.0, 2.0, -1.0], dtype=F64), torch.zeros(47, dtype=F64)])
    A = symmetric_with_eigenvalues(spectrum, seed=5)
    density = slq_density(lambda v: A @ v, 50, num_probes=2, num_steps=10, dtype=F64, generator=_gen(6))
    probes = rademacher((2, 50), dtype=F64, generator=_gen(6))
    assert density.nodes.shape == (2, 10)
    assert float(density.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    for p in range(2):
        q = probes[p] / probes[p].norm()
        exact, absolute = _exact_moments(A, q, 25)
        quadrature = _quadrature_moments(density.nodes[p], density.weights[p] * 2, 25)
        assert float(((quadrature - exact).abs() / absolute).max()) <= 1e-8
        heavy = density.nodes[p][density.weights[p] > 1e-12]
        distance = (heavy[:, None] - torch.tensor([4.0, 2.0, -1.0, 0.0], dtype=F64)).abs().min(1).values
        assert float(distance.max()) <= 1e-10


def test_num_steps_beyond_dim_gives_the_exact_measure(symmetric_with_eigenvalues):
    spectrum = torch.linspace(-1.0, 1.0, 12, dtype=F64)
    A = symmetric_with_eigenvalues(spectrum, seed=7)
    density = slq_density(lambda v: A @ v, 12, num_probes=1, num_steps=50, dtype=F64, generator=_gen(8))
    assert density.nodes.shape == (1, 12)
    torch.testing.assert_close(density.nodes[0].sort().values, spectrum, atol=1e-12, rtol=0)
    q = rademacher((1, 12), dtype=F64, generator=_gen(8))[0] / 12**0.5
    lam, U = torch.linalg.eigh(A)
    order = density.nodes[0].argsort()
    torch.testing.assert_close(density.weights[0][order], (U.T @ q) ** 2, atol=1e-12, rtol=0)


def test_one_dimensional_operator():
    density = slq_density(lambda v: 3.0 * v, 1, num_probes=2, num_steps=5, dtype=F64, generator=_gen(0))
    assert density.nodes.tolist() == [[3.0], [3.0]]
    assert density.weights.tolist() == [[0.5], [0.5]]


def test_float32(bulk_matrix):
    A, spectrum = bulk_matrix
    A32 = A.float()
    density = slq_density(lambda v: A32 @ v, 80, num_probes=2, num_steps=15, generator=_gen(9))
    assert density.nodes.dtype == density.weights.dtype == torch.float32
    assert float(density.weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(density.nodes.max()) == pytest.approx(3.0, abs=1e-4)


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"`num_probes` must be >= 1"):
        slq_density(lambda v: v, 10, num_probes=0)
    with pytest.raises(ValueError, match=r"`num_steps` must be >= 1"):
        slq_density(lambda v: v, 10, num_steps=0)
    with pytest.raises(TypeError, match=r"`num_steps` must be an int"):
        slq_density(lambda v: v, 10, num_steps=2.5)
    with pytest.raises(ValueError, match=r"`dim` must be >= 1"):
        slq_density(lambda v: v, 0)
    with pytest.raises(TypeError, match=r"`matvec` must be callable"):
        slq_density(3, 10)
    with pytest.raises(ValueError, match=r"`probes` must be a floating tensor of shape \(4, 10\)"):
        slq_density(lambda v: v, 10, probes=torch.ones(3, 10))
    with pytest.raises(ValueError, match=r"every probe must be non-zero"):
        slq_density(lambda v: v, 10, num_probes=1, probes=torch.zeros(1, 10))
    with pytest.raises(ValueError, match=r"conflicts with `probes.dtype`"):
        slq_density(lambda v: v, 10, num_probes=1, probes=torch.ones(1, 10), dtype=F64)
    density = SpectralDensity(nodes=torch.zeros(1, 2), weights=torch.full((1, 2), 0.5))
    with pytest.raises(ValueError, match=r"`sigma` must be a positive finite number"):
        density.smoothed(torch.zeros(3), 0.0)
    with pytest.raises(ValueError, match=r"`grid` must be a 1-D floating-point tensor"):
        density.smoothed(torch.zeros(3, 2), 0.1)
    with pytest.raises(ValueError, match=r"shape \(num_probes, m\)"):
        SpectralDensity(nodes=torch.zeros(2), weights=torch.zeros(2))
    with pytest.raises(TypeError, match=r"`density` must be a SpectralDensity"):
        gaussian_smoothed_density("density", torch.zeros(3), 0.1)
