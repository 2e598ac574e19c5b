"""Singular-vector agreement, rank measures and inter-layer alignment against direct implementations of
Yunis et al.'s (2024) definitions, on matrices where they differ from the old ``rotation``.

Each reference below is written from the paper's definition with a full ``torch.linalg.svd`` in float64:
agreement = diag |(U_tᵀ U_ref) ⊙ (V_tᵀ V_ref)|, alignment = diag |V_{l+1}ᵀ U_l|, the rank measures from all
singular values. Tolerances: 1e-10 for float64 exact decompositions (rounding only).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_spectral.functional.weights.interlayer_alignment import (
    attention_alignment,
    consecutive_pairs,
    pair_alignment,
)
from lightning_spectral.functional.weights.matrices import weight_matrices
from lightning_spectral.functional.weights.singular_dynamics import (
    agreement_score,
    alignment_diagonal,
    singular_vector_agreement,
)
from lightning_spectral.functional.weights.spectrum import weight_spectra, weight_spectrum
from lightning_spectral.functional.weights.spectrum_metrics import gini_coefficient, mass_count

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


def direct_rank_measures(sigma: torch.Tensor, m: int, n: int) -> dict[str, float]:
    r = min(m, n)
    p = sigma / sigma.sum()
    effective = math.exp(-float((p * p.log()).sum()))
    stable = float((sigma**2).sum() / sigma[0] ** 2)
    running, count = 0.0, 0
    for value in sigma.tolist():  # the paper's count: leading values until 90 % of Σσ is held
        running += value
        count += 1
        if running >= 0.9 * float(sigma.sum()) - 1e-12:
            break
    values = sigma.tolist()
    gini = sum(abs(a - b) for a in values for b in values) / (2 * r * sum(values))
    return {
        "effective_rank_ratio": effective / r,
        "stable_rank_ratio": stable / r,
        "mass90_count": count,
        "gini": gini,
    }


@pytest.mark.parametrize("shape", [(30, 20), (7, 40)])
def test_rank_measures_match_their_definitions(shape):
    generator = torch.Generator().manual_seed(3)
    W = torch.randn(*shape, generator=generator, dtype=torch.float64) @ torch.diag(
        torch.linspace(1.0, 0.01, shape[1], dtype=torch.float64)
    )
    spectrum = weight_spectrum(W, k=3, method="exact")
    expected = direct_rank_measures(torch.linalg.svdvals(W), *shape)
    for key, value in expected.items():
        assert getattr(spectrum, key) == pytest.approx(value, abs=TOL), key
    # and they measure something: this spectrum is neither flat nor one value
    assert 0.1 < spectrum.gini < 0.9 and 1 < spectrum.mass90_count < min(shape)


def test_rank_measures_edge_cases_and_randomized():
    assert mass_count(torch.tensor([5.0, 4.0, 1.0])) == 2
    assert mass_count(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 4  # 3 hold only 75 %
    assert mass_count(torch.zeros(3)) == 0
    assert gini_coefficient(torch.ones(5)) == pytest.approx(0.0, abs=TOL)
    assert gini_coefficient(torch.tensor([0.0, 0.0, 0.0, 2.0])) == pytest.approx(0.75, abs=TOL)
    W = torch.randn(300, 200, generator=torch.Generator().manual_seed(4))
    spectrum = weight_spectrum(W, k=5, method="randomized")
    assert spectrum.effective_rank_is_estimate
    assert spectrum.effective_rank_ratio is None and spectrum.mass90_count is None and spectrum.gini is None
    assert spectrum.stable_rank_ratio == pytest.approx(spectrum.stable_rank / 200, rel=1e-12)


def test_consecutive_layer_alignment_is_the_papers_diagonal():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Embedding(10, 6), nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 4)).double()
    matrices = weight_matrices(model)
    pairs = consecutive_pairs(matrices)
    assert [(p.earlier, p.later) for p in pairs] == [("0.weight", "1.weight"), ("1.weight", "3.weight")]
    spectra = dict(
        zip((m.name for m in matrices), weight_spectra([m.matrix for m in matrices], 10, method="exact"))
    )
    types = {m.name: m.module_type for m in matrices}
    embedding, hidden, head = (m.matrix for m in matrices)
    # Linear → Linear: diag |V_{l+1}ᵀ U_l|
    U1, _, _ = torch.linalg.svd(hidden)
    _, _, Vh2 = torch.linalg.svd(head, full_matrices=False)
    expected = torch.diagonal((Vh2 @ U1[:, :4]).abs())
    got = pair_alignment(spectra["1.weight"], types["1.weight"], spectra["3.weight"])
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
    # Embedding (one row per token, x ↦ Wᵀx) → Linear: the table's right vectors are its output side
    _, _, Vh_e = torch.linalg.svd(embedding, full_matrices=False)
    _, _, Vh1 = torch.linalg.svd(hidden, full_matrices=False)
    expected = torch.diagonal((Vh1 @ Vh_e.T).abs())
    got = pair_alignment(spectra["0.weight"], types["0.weight"], spectra["1.weight"])
    torch.testing.assert_close(got, expected, atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="not consecutive"):
        alignment_diagonal(spectra["1.weight"].left_vectors, spectra["1.weight"].right_vectors)


def test_attention_alignment_per_head_query_key_and_value_output():
    torch.manual_seed(6)
    attention = nn.MultiheadAttention(8, num_heads=2).double()
    result = attention_alignment(attention, "attn", 4, method="exact")
    assert sorted(result) == ["attn.qk[0]", "attn.qk[1]", "attn.vo"]
    W = attention.in_proj_weight.detach()
    for h in range(2):
        Uq, _, _ = torch.linalg.svd(W[4 * h : 4 * h + 4], full_matrices=False)
        Uk, _, _ = torch.linalg.svd(W[8 + 4 * h : 8 + 4 * h + 4], full_matrices=False)
        torch.testing.assert_close(
            result[f"attn.qk[{h}]"], torch.diagonal((Uq.T @ Uk).abs()), atol=TOL, rtol=0
        )
    Uv, _, _ = torch.linalg.svd(W[16:], full_matrices=False)
    _, _, Vh_o = torch.linalg.svd(attention.out_proj.weight.detach(), full_matrices=False)
    torch.testing.assert_close(result["attn.vo"], torch.diagonal(Vh_o @ Uv).abs()[:4], atol=TOL, rtol=0)


def test_consecutive_pairs_break_at_attention_and_recurrent_layers():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 8)
            self.attn = nn.MultiheadAttention(8, 2)
            self.up = nn.Linear(8, 16)
            self.down = nn.Linear(16, 8)
            self.lstm = nn.LSTM(8, 8)
            self.head = nn.Linear(8, 3)

    pairs = consecutive_pairs(weight_matrices(Block()))
    # embed → attn.q and attn.out_proj → up are not guessed across the attention's blocks; lstm breaks too
    assert [p.name for p in pairs] == ["attn.out_proj.weight->up.weight", "up.weight->down.weight"]
