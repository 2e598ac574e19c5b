"""The residual check and Lanczos refinement of truncated SVDs, against torch.linalg.svdvals.

Flat (Marchenko–Pastur) spectra are the hard case for randomized SVD: two power iterations leave the top
singular values of a Gaussian matrix several percent low. With the check (default ``tol``) every reported
value must be within 1e-3 relative of the exact one (float32), over many seeds and both orientations.
"""

from __future__ import annotations

import pytest
import torch

import lightning_spectral.functional.weights.singular_refinement as refinement
from lightning_spectral.functional import weight_spectra, weight_spectrum
from lightning_spectral.linalg import randomized_svd


def gaussian(m: int, n: int, seed: int) -> torch.Tensor:
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed)) / n**0.5


def rel_err(values: torch.Tensor, reference: torch.Tensor) -> float:
    return ((values.double() - reference).abs() / reference).max().item()


@pytest.mark.parametrize("shape", [(300, 200), (200, 300), (512, 512)])
def test_flat_spectra_are_right_after_the_check(shape):
    worst_raw, worst_checked = 0.0, 0.0
    for seed in range(8):
        W = gaussian(*shape, seed)
        reference = torch.linalg.svdvals(W.double())[:5]
        raw = weight_spectrum(W, method="randomized", tol=None, generator=torch.Generator().manual_seed(seed))
        checked = weight_spectrum(W, method="randomized", generator=torch.Generator().manual_seed(seed))
        worst_raw = max(worst_raw, rel_err(raw.singular_values, reference))
        worst_checked = max(worst_checked, rel_err(checked.singular_values, reference))
        assert checked.refined and checked.relative_residual <= 1e-2
        assert raw.relative_residual > 1e-2 and not raw.refined
        U_exact = torch.linalg.svd(W.double())[0][:, :5]  # the vectors are right too: the subspace matches
        overlap = torch.linalg.matrix_norm(U_exact.T @ checked.left_vectors.double()) ** 2 / 5
        assert overlap.item() >= 1 - 1e-3
    assert worst_raw >= 1e-2  # the test is not vacuous: the raw sketch is off
    assert worst_checked <= 1e-3


def test_decaying_spectrum_passes_the_check_without_refinement():
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(400, 300, generator=g))
    V, _ = torch.linalg.qr(torch.randn(300, 300, generator=g))
    sigma = 1.0 / torch.arange(1, 301, dtype=torch.float32)
    W = (U * sigma) @ V.T
    result = weight_spectrum(W, method="randomized", generator=g)
    assert not result.refined and result.relative_residual <= 1e-2
    assert rel_err(result.singular_values, sigma[:5].double()) <= 1e-3


def test_residuals_of_an_exact_svd_are_rounding_level_and_of_a_perturbed_one_are_not():
    W = gaussian(60, 40, 1).double()[None]
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    U, S, Vh = U[..., :4], S[..., :4], Vh[..., :4, :]
    assert refinement.relative_residuals(W, U, S, Vh).item() <= 1e-12
    # σ̃ = 1.01σ: both residual halves are 0.01σ, so ρ/σ̃ = √2·0.01/1.01
    assert refinement.relative_residuals(W, U, S * 1.01, Vh).item() == pytest.approx(
        0.01 * 2**0.5 / 1.01, rel=1e-6
    )


def test_small_matrices_are_refined_by_the_dense_svd_without_lanczos(monkeypatch):
    def no_lanczos(*args):
        raise AssertionError("Lanczos must not run for min(m, n) <= DENSE_MAX_DIM")

    monkeypatch.setattr(refinement, "_lanczos_triplets", no_lanczos)
    W = gaussian(3 * refinement.DENSE_MAX_DIM, refinement.DENSE_MAX_DIM, 6)
    U, S, Vh = randomized_svd(W[None], 5, num_power_iterations=0, generator=torch.Generator().manual_seed(0))
    assert refinement.relative_residuals(W[None], U, S, Vh)[0] > 1e-2  # the flat spectrum fails the check
    U, S, Vh, residuals, refined = refinement.refine_truncated_svd(W[None], U, S, Vh, tol=1e-2)
    assert refined == [True] and residuals[0] <= 1e-5
    assert rel_err(S[0], torch.linalg.svdvals(W.double())[:5]) <= 1e-5


def test_lanczos_that_does_not_converge_falls_back_to_the_dense_svd(monkeypatch):
    monkeypatch.setattr(refinement, "DENSE_MAX_DIM", 0)  # take the Lanczos path at this small size
    monkeypatch.setattr(refinement, "LANCZOS_MAX_ITER", 1)  # far too few products to converge
    W = gaussian(120, 80, 2)
    U, S, Vh = randomized_svd(W[None], 5, num_power_iterations=0, generator=torch.Generator().manual_seed(0))
    U, S, Vh, residuals, refined = refinement.refine_truncated_svd(W[None], U, S, Vh, tol=1e-3)
    assert refined == [True] and residuals[0] <= 1e-5
    assert rel_err(S[0], torch.linalg.svdvals(W.double())[:5]) <= 1e-5


def test_batched_refinement_touches_only_the_failing_matrices():
    g = torch.Generator().manual_seed(3)
    Q1, _ = torch.linalg.qr(torch.randn(200, 150, generator=g))
    Q2, _ = torch.linalg.qr(torch.randn(150, 150, generator=g))
    decaying = (Q1 * (1.0 / torch.arange(1, 151) ** 2)) @ Q2.T
    flat = gaussian(200, 150, 4)
    results = weight_spectra([decaying, flat, decaying.clone()], method="randomized", generator=g)
    assert [r.refined for r in results] == [False, True, False]
    for W, r in zip([decaying, flat], results):
        assert rel_err(r.singular_values, torch.linalg.svdvals(W.double())[:5]) <= 1e-3


def test_a_float32_refinement_that_fails_the_check_is_redone_in_float64(monkeypatch):
    """The Gram matrix squares the dynamic range: when the weight-dtype Lanczos result fails the residual
    check, the refinement runs again in float64 (and its result is the one kept)."""
    real = refinement._lanczos_triplets
    dtypes = []

    def spoiled_in_float32(W, k, tol, start, generator):
        dtypes.append(W.dtype)
        U, S, Vh = real(W, k, tol, start, generator)
        return (U, S * 1.05, Vh) if W.dtype == torch.float32 else (U, S, Vh)  # 5 % off: fails the check

    monkeypatch.setattr(refinement, "_lanczos_triplets", spoiled_in_float32)
    monkeypatch.setattr(refinement, "DENSE_MAX_DIM", 0)  # take the Lanczos path at this small size
    W = gaussian(150, 100, 5)
    U, S, Vh = randomized_svd(W[None], 5, num_power_iterations=0, generator=torch.Generator().manual_seed(0))
    U, S, Vh, residuals, refined = refinement.refine_truncated_svd(W[None], U, S, Vh, tol=1e-2)
    assert dtypes == [torch.float32, torch.float64] and refined == [True]
    assert S.dtype == torch.float32 and residuals[0] <= 1e-3
    assert rel_err(S[0], torch.linalg.svdvals(W.double())[:5]) <= 1e-5
