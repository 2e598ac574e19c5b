"""The small tridiagonal eigenproblems of Lanczos and SLQ are solved in torch's thread pool, never NumPy's (#26)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_spectral.linalg import lanczos, slq_density
from lightning_spectral.linalg.lanczos import small_eigh


def _tridiagonal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    alphas, betas = rng.normal(size=n), rng.uniform(0.1, 1.0, size=n - 1)
    return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_small_eigh_is_an_eigendecomposition(n):
    T = _tridiagonal(n, seed=n)
    theta, S = small_eigh(T)
    assert theta.dtype == S.dtype == np.float64 and theta.shape == (n,) and S.shape == (n, n)
    assert np.all(np.diff(theta) >= 0)  # ascending, like numpy.linalg.eigh
    np.testing.assert_allclose(theta, np.linalg.eigvalsh(T), rtol=0, atol=1e-12)
    np.testing.assert_allclose(S.T @ S, np.eye(n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(T @ S, S * theta, rtol=0, atol=1e-12)
    values, none = small_eigh(T, eigenvectors=False)
    assert none is None
    np.testing.assert_allclose(values, theta, rtol=0, atol=1e-12)


def test_lanczos_and_slq_do_not_call_numpy_lapack(monkeypatch):
    """NumPy's bundled OpenBLAS keeps its own thread pool, which stalls against torch's (issue #26)."""

    def refuse(*args, **kwargs):
        raise AssertionError("numpy.linalg was called inside a Lanczos loop")

    for name in ("eigh", "eigvalsh", "eig", "svd", "qr", "solve"):
        monkeypatch.setattr(np.linalg, name, refuse)
    generator = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, dtype=torch.float64, generator=generator))
    eigenvalues = torch.cat([torch.tensor([9.0, 9.0, 7.0]), torch.linspace(-1.0, 1.0, 57)]).double()
    A = Q @ torch.diag(eigenvalues) @ Q.T
    result = lanczos(lambda v: A @ v, 60, 3, max_matvecs=60, dtype=torch.float64, generator=generator)
    torch.testing.assert_close(result.eigenvalues, eigenvalues[:3], rtol=0, atol=1e-8)
    density = slq_density(
        lambda v: A @ v, 60, num_probes=2, num_steps=10, dtype=torch.float64, generator=generator
    )
    assert density.nodes.shape == (2, 10)
