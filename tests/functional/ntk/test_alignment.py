"""ntk_alignment, kernel_target_alignment, offdiagonal_alignment and ntk_targets against their formulas on
dense kernels and on the Gram matrix of the explicit Jacobian (built row by row with ``torch.autograd.grad``),
in float64. Tolerance: alignments to 1e-12.
"""

from __future__ import annotations

import pytest
import torch
from spectral_testing.problems import DTYPE, NTK_CASES, tiny_mlp
from spectral_testing.references import autograd_jacobian
from torch import nn

from lightning_spectral.functional.ntk.alignment import (
    kernel_alignments,
    kernel_target_alignment,
    ntk_alignment,
    ntk_targets,
    offdiagonal_alignment,
)
from lightning_spectral.functional.ntk.kernel_matrix import ntk_matrix

CASES = NTK_CASES


def test_alignment_of_supplied_kernels():
    y = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=DTYPE)
    assert kernel_target_alignment(2.5 * torch.outer(y, y), y) == pytest.approx(1.0, abs=1e-12)
    assert kernel_target_alignment(torch.outer(y, y), -y) == pytest.approx(1.0, abs=1e-12)
    # Identity: ⟨I, yyᵀ⟩ = ‖y‖², ‖I‖_F = √N, ‖yyᵀ‖_F = ‖y‖²  →  1/√N.
    assert kernel_target_alignment(torch.eye(4, dtype=DTYPE), y) == pytest.approx(0.5, abs=1e-12)
    # A kernel orthogonal to the target direction.
    u = torch.tensor([2.0, 1.0, 0.0, 0.0], dtype=DTYPE)  # u ⟂ y
    assert kernel_target_alignment(torch.outer(u, u), y) == pytest.approx(0.0, abs=1e-12)


def test_centered_alignment_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 3, dtype=DTYPE, generator=g)
    kernel, y = a @ a.T, torch.randn(6, dtype=DTYPE, generator=g)
    h = torch.eye(6, dtype=DTYPE) - torch.full((6, 6), 1 / 6, dtype=DTYPE)
    kc, yc = h @ kernel @ h, h @ torch.outer(y, y) @ h
    expected = (kc * yc).sum() / (torch.linalg.norm(kc) * torch.linalg.norm(yc))
    assert kernel_target_alignment(kernel, y, centered=True) == pytest.approx(expected.item(), abs=1e-12)
    # Centring removes a constant offset: yyᵀ + c·11ᵀ with centred y is perfectly aligned again.
    yc_vec = y - y.mean()
    shifted = torch.outer(yc_vec, yc_vec) + 5.0
    assert kernel_target_alignment(shifted, yc_vec) < 0.9
    assert kernel_target_alignment(shifted, yc_vec, centered=True) == pytest.approx(1.0, abs=1e-12)


def test_model_whose_ntk_is_rank_one_along_the_targets_has_alignment_one():
    """f(x) = w·x with inputs x_i = t_i·u: Θ = ‖u‖² t tᵀ, exactly rank one along t."""
    model = nn.Linear(3, 1, bias=False).to(DTYPE)
    t = torch.tensor([1.0, -0.5, 2.0, 0.25, -1.5], dtype=DTYPE)
    inputs = t[:, None] * torch.tensor([0.3, -1.2, 0.7], dtype=DTYPE)
    assert ntk_alignment(model, inputs, 4.0 * t) == pytest.approx(1.0, abs=1e-12)
    assert ntk_alignment(model, inputs, -t[:, None]) == pytest.approx(1.0, abs=1e-12)
    assert ntk_alignment(
        model, inputs, torch.tensor([2.0, 4.0, 0.0, 0.0, 0.0], dtype=DTYPE)
    ) == pytest.approx(0.0, abs=1e-12)  # ⟂ t


@pytest.mark.parametrize("centered", [False, True])
def test_model_alignment_matches_formula_on_ntk_matrix(centered):
    model, inputs = CASES["cnn"][0](), CASES["cnn"][1]()  # K = 2 logits
    kernel = ntk_matrix(model, inputs)
    classes = torch.tensor([0, 1, 1, 0, 1])
    one_hot = torch.zeros(5, 2, dtype=DTYPE)
    one_hot[torch.arange(5), classes] = 1.0
    expected = kernel_target_alignment(kernel, one_hot.reshape(-1), centered=centered)
    assert ntk_alignment(model, inputs, classes, centered=centered) == pytest.approx(expected, abs=1e-12)
    regression = torch.randn(5, 2, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    y = regression.reshape(-1)
    if centered:
        n = y.numel()
        h = torch.eye(n, dtype=DTYPE) - 1.0 / n
        kc, yc = h @ kernel @ h, h @ torch.outer(y, y) @ h
    else:
        kc, yc = kernel, torch.outer(y, y)
    formula = ((kc * yc).sum() / (torch.linalg.norm(kc) * torch.linalg.norm(yc))).item()
    assert ntk_alignment(model, inputs, regression, centered=centered) == pytest.approx(formula, abs=1e-12)


@pytest.mark.parametrize(
    "targets, message",
    [
        (torch.tensor([0, 1, 3]), "targets"),  # class index out of range for K = 3
        (torch.tensor([[0, 1, 2]]), "targets"),  # integer targets must be (B,)
        (torch.zeros(3, 2, dtype=DTYPE), "targets"),  # B·K mismatch
        (torch.zeros(3, 3, dtype=DTYPE), "`targets` is zero"),  # undefined alignment
    ],
)
def test_alignment_validation(targets, message):
    with pytest.raises(ValueError, match=message):
        ntk_alignment(tiny_mlp(), torch.randn(3, 4, dtype=DTYPE), targets)


def pairwise_correlation_reference(jacobian: torch.Tensor, targets: torch.Tensor) -> float:
    """numpy's Pearson correlation between ``Σ_k ⟨J_(i,k), J_(j,k)⟩`` and ``⟨y_i, y_j⟩`` over the pairs
    ``i < j`` (the matrices are symmetric, so ``i < j`` and ``i ≠ j`` give the same correlation), with the
    output-traced kernel summed from the explicit per-row Jacobian one output at a time."""
    num_examples = targets.shape[0]
    rows = jacobian.reshape(num_examples, -1, jacobian.shape[1])
    traced = sum(rows[:, k] @ rows[:, k].T for k in range(rows.shape[1]))
    gram = targets @ targets.T
    upper = torch.triu_indices(num_examples, num_examples, offset=1)
    pairs = torch.stack([traced[upper[0], upper[1]], gram[upper[0], upper[1]]]).numpy()
    import numpy

    return float(numpy.corrcoef(pairs)[0, 1])


@pytest.mark.parametrize("case", sorted(CASES))
def test_offdiagonal_alignment_matches_the_explicit_jacobian(case):
    model, inputs = CASES[case][0](), CASES[case][1]()
    jacobian = autograd_jacobian(model, inputs)
    num_examples, num_outputs = inputs.shape[0], jacobian.shape[0] // inputs.shape[0]
    classes = torch.arange(num_examples) % 2  # labels repeat: both "same" and "different" pairs exist
    one_hot = nn.functional.one_hot(classes, num_outputs).to(DTYPE)
    regression = torch.randn(
        num_examples, num_outputs, dtype=DTYPE, generator=torch.Generator().manual_seed(5)
    )
    for targets, dense in ((classes, one_hot), (regression, regression)):
        expected = pairwise_correlation_reference(jacobian, dense)
        assert ntk_alignment(model, inputs, targets, offdiagonal=True) == pytest.approx(expected, abs=1e-12)
        kernel = jacobian @ jacobian.T
        alignments = kernel_alignments(kernel, dense.reshape(-1), num_examples)
        assert alignments["alignment_offdiagonal"] == pytest.approx(expected, abs=1e-12)
        assert alignments["alignment"] == pytest.approx(kernel_target_alignment(kernel, dense), abs=1e-12)
        assert alignments["alignment_centered"] == pytest.approx(
            kernel_target_alignment(kernel, dense, centered=True), abs=1e-12
        )


def test_offdiagonal_alignment_ignores_the_diagonal():
    """Same-label pairs more similar than the rest, exactly linearly: correlation 1 whatever the diagonal."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same = (labels[:, None] == labels[None, :]).to(DTYPE)
    one_hot = nn.functional.one_hot(labels, 3).to(DTYPE).reshape(-1)
    for diagonal in (0.0, 1.0, 100.0):
        # A K = 3 kernel whose output trace is 3·(0.5 + 2·same) off the diagonal.
        traced = 0.5 + 2.0 * same + diagonal * torch.eye(6, dtype=DTYPE)
        kernel = torch.kron(traced, torch.eye(3, dtype=DTYPE))
        assert offdiagonal_alignment(kernel, one_hot, 6) == pytest.approx(1.0, abs=1e-12)
        assert offdiagonal_alignment(kernel.neg(), one_hot, 6) == pytest.approx(-1.0, abs=1e-12)
    # The plain alignment of the same kernels falls as the diagonal grows.
    plain = [
        kernel_target_alignment(
            torch.kron(0.5 + 2 * same + d * torch.eye(6, dtype=DTYPE), torch.eye(3, dtype=DTYPE)), one_hot
        )
        for d in (0.0, 100.0)
    ]
    assert plain[1] < 0.8 * plain[0], plain


def test_offdiagonal_alignment_is_left_out_where_undefined():
    kernel = torch.eye(16, dtype=DTYPE) + 0.1  # B = 4 examples, K = 4 outputs
    factor = torch.randn(16, 5, dtype=DTYPE, generator=torch.Generator().manual_seed(6))
    distinct = ntk_targets(torch.tensor([0, 1, 2, 3]), 4, 4)  # no two examples share a label: Gram constant
    assert set(kernel_alignments(factor @ factor.T, distinct, 4)) == {"alignment", "alignment_centered"}
    with pytest.raises(ValueError, match="Gram matrix is constant"):
        offdiagonal_alignment(factor @ factor.T, distinct, 4)
    constant = torch.ones(16, dtype=DTYPE)  # constant targets: neither centred form is defined
    assert set(kernel_alignments(kernel, constant, 4)) == {"alignment"}
    two = torch.eye(4, dtype=DTYPE) + 0.1  # 2 examples: a single pair, no correlation
    assert set(kernel_alignments(two, torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=DTYPE), 2)) == {
        "alignment",
        "alignment_centered",
    }
    repeated = ntk_targets(torch.tensor([0, 0, 1, 2]), 4, 4)
    with pytest.raises(ValueError, match="kernel is constant"):
        offdiagonal_alignment(kernel, repeated, 4)  # Θ̄ is 0.4 off the diagonal everywhere
    assert "alignment_offdiagonal" not in kernel_alignments(kernel, repeated, 4)
    assert "alignment_offdiagonal" in kernel_alignments(factor @ factor.T, repeated, 4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: offdiagonal_alignment(torch.eye(6), torch.ones(6), 2), "num_examples"),
        (lambda: offdiagonal_alignment(torch.eye(6), torch.ones(6), True), "num_examples"),
        (lambda: offdiagonal_alignment(torch.eye(6), torch.ones(6), 4), "multiple of num_examples"),
        (lambda: offdiagonal_alignment(torch.ones(6, 3), torch.ones(6), 3), "square"),
        (lambda: offdiagonal_alignment(torch.eye(6), torch.ones(5), 3), "`targets`"),
        (
            lambda: ntk_alignment(
                tiny_mlp(),
                torch.randn(3, 4, dtype=DTYPE),
                torch.tensor([0, 0, 1]),
                centered=True,
                offdiagonal=True,
            ),
            "exclude each other",
        ),
    ],
)
def test_offdiagonal_alignment_validation(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_ntk_targets_one_hot_encoding():
    assert ntk_targets(torch.tensor([2, 0]), 2, 3).tolist() == [0, 0, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="targets"):
        kernel_target_alignment(torch.eye(3), torch.ones(4))
    with pytest.raises(ValueError, match="kernel"):
        kernel_target_alignment(torch.ones(3, 2), torch.ones(3))
