"""Inter-layer alignment against Yunis et al.'s (2024) definition, alignment = diag |V_{l+1}ᵀ U_l|, from full
``torch.linalg.svd`` decompositions in float64. Tolerance: 1e-10 (rounding only).
"""

from __future__ import annotations

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
    alignment_diagonal,
)
from lightning_spectral.functional.weights.spectrum import weight_spectra

TOL = 1e-10


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
