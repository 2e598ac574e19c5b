"""Singular-vector agreement against a direct implementation of Yunis et al.'s (2024) definition, on matrices
where it differs from the old ``rotation``.

The reference is written from the paper's definition with a full ``torch.linalg.svd`` in float64:
agreement = diag |(U_tᵀ U_ref) ⊙ (V_tᵀ V_ref)|. Tolerance: 1e-10 for float64 exact decompositions (rounding only).
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_spectral.functional.weights.singular_dynamics import (
    agreement_score,
    singular_vector_agreement,
)
from lightning_spectral.functional.weights.spectrum import weight_spectrum

TOL = 1e-10


def direct_agreement(W: torch.Tensor, W_ref: torch.Tensor) -> torch.Tensor:
    """Yunis et al.: the diagonal of |(U_tᵀ U_ref) ⊙ (V_tᵀ V_ref)| from full SVDs."""
    U, _, Vh = torch.linalg.svd(W.double(), full_matrices=False)
    U_ref, _, Vh_ref = torch.linalg.svd(W_ref.double(), full_matrices=False)
    return torch.diagonal(((U.T @ U_ref) * (Vh @ Vh_ref.T)).abs())


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def with_spectrum(U: torch.Tensor, sigma: list[float], V: torch.Tensor) -> torch.Tensor:
    r = len(sigma)
    return U[:, :r] @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ V[:, :r].T


@pytest.fixture
def bases():
    generator = torch.Generator().manual_seed(0)
    return random_orthogonal(12, generator), random_orthogonal(8, generator)


SIGMA = [8.0, 6.0, 5.0, 4.0, 3.0, 2.5, 2.0, 1.0]


def test_agreement_is_the_papers_diagonal_on_a_perturbed_matrix():
    generator = torch.Generator().manual_seed(1)
    W_ref = torch.randn(30, 20, generator=generator, dtype=torch.float64)
    W = W_ref + 0.3 * torch.randn(30, 20, generator=generator, dtype=torch.float64)
    reference = weight_spectrum(W_ref, k=20, method="exact")
    measured = weight_spectrum(W, k=20, method="exact", previous=reference)
    expected = direct_agreement(W, W_ref)
    torch.testing.assert_close(measured.agreement, expected, atol=TOL, rtol=0)
    # it moved somewhere (a test that cannot fail is a defect): not all indices agree
    assert expected.min() < 0.9 and expected.max() > 0.5
    # the score is the mean of the first 10
    assert agreement_score(measured.agreement) == pytest.approx(float(expected[:10].mean()), abs=TOL)


def test_swapped_sigma_1_and_sigma_2_rotation_zero_agreement_zero(bases):
    U, V = bases
    before = with_spectrum(U, SIGMA, V)
    swapped = list(SIGMA)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    after = with_spectrum(U, swapped, V)
    spectrum = weight_spectrum(
        after, k=5, method="exact", previous=weight_spectrum(before, k=5, method="exact")
    )
    expected = direct_agreement(after, before)[:5]
    # the old measure sees nothing: the top-5 left subspace is the same
    assert spectrum.rotation == pytest.approx(0.0, abs=TOL)
    # Yunis et al.'s agreement sees σ_1 and σ_2 trade directions, and nothing else moved
    torch.testing.assert_close(spectrum.agreement, expected, atol=TOL, rtol=0)
    torch.testing.assert_close(
        spectrum.agreement, torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64), atol=TOL, rtol=0
    )


def test_right_vectors_rotated_alone_rotation_zero_agreement_halved(bases):
    U, V = bases
    before = with_spectrum(U, SIGMA, V)
    # turn v_1 by 60° towards v_7 (outside the top 5): the left vectors and the singular values stay
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    V_turned = V.clone()
    V_turned[:, 0], V_turned[:, 6] = c * V[:, 0] + s * V[:, 6], -s * V[:, 0] + c * V[:, 6]
    after = with_spectrum(U, SIGMA, V_turned)
    spectrum = weight_spectrum(
        after, k=5, method="exact", previous=weight_spectrum(before, k=5, method="exact")
    )
    assert spectrum.rotation == pytest.approx(0.0, abs=TOL)
    expected = direct_agreement(after, before)[:5]
    torch.testing.assert_close(spectrum.agreement, expected, atol=TOL, rtol=0)
    assert float(spectrum.agreement[0]) == pytest.approx(0.5, abs=TOL)  # cos 60°
    assert agreement_score(spectrum.agreement) == pytest.approx(0.9, abs=TOL)


def test_randomized_agreement_matches_the_definition():
    """On a decaying spectrum the randomized top-k vectors are close to the exact ones: the agreement matches
    to 1e-4 (the randomized vectors' own error, σ_5/σ_6 = 1.2 with two power iterations; measured 1.3e-5)."""
    generator = torch.Generator().manual_seed(2)
    U = random_orthogonal(300, generator)[:, :200]
    V = random_orthogonal(200, generator)
    sigma = 1.0 / torch.arange(1, 201, dtype=torch.float64)
    W_ref = U @ torch.diag(sigma) @ V.T
    W = W_ref + 1e-3 * torch.randn(300, 200, generator=generator, dtype=torch.float64)
    reference = weight_spectrum(W_ref, k=5, method="randomized", generator=generator)
    measured = weight_spectrum(W, k=5, method="randomized", previous=reference, generator=generator)
    assert measured.method_used == "randomized"
    torch.testing.assert_close(measured.agreement, direct_agreement(W, W_ref)[:5], atol=1e-4, rtol=0)


def test_agreement_functional_form_and_errors():
    U, V = torch.eye(4)[:, :3], torch.eye(3)
    assert singular_vector_agreement(U, V, U[:, :2], V[:, :2]).shape == (2,)
    with pytest.raises(ValueError, match="equal rows"):
        singular_vector_agreement(U, V, torch.eye(5)[:, :3], V)
    with pytest.raises(TypeError, match="`V_ref`"):
        singular_vector_agreement(U, V, U, [[1.0]])
    with pytest.raises(ValueError, match="top"):
        agreement_score(torch.ones(3), top=0)
