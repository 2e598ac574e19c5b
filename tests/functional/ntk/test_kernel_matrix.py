"""ntk_matrix, ntk_alignment and ntk_lambda_max against a dense reference, in float64.

The reference Jacobian here is built row by row with ``torch.autograd.grad`` on the whole-batch output
(no torch.func at all), so it checks the per-example vmap plumbing and the example-major ordering too.
Tolerances: kernel entries to 1e-12 of the kernel's largest entry; eigenvalues to 1e-6 relative (the
Lanczos tolerance); alignments to 1e-12.
"""

from __future__ import annotations

import pytest
import torch
from spectral_testing.problems import DTYPE, tiny_cnn, tiny_mlp
from torch import nn

from lightning_spectral.functional.ntk.alignment import (
    kernel_alignments,
    kernel_target_alignment,
    ntk_alignment,
    ntk_targets,
    offdiagonal_alignment,
)
from lightning_spectral.functional.ntk.eigenvalues import ntk_lambda_max, ntk_operator
from lightning_spectral.functional.ntk.kernel_matrix import NTK_MATRIX_MAX_ROWS, ntk_matrix
from lightning_spectral.functional.ntk.trace import ntk_trace

CASES = {
    "mlp": (tiny_mlp, lambda: torch.randn(7, 4, dtype=DTYPE, generator=torch.Generator().manual_seed(2))),
    "cnn": (
        tiny_cnn,
        lambda: torch.randn(5, 2, 6, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(3)),
    ),
}


def autograd_jacobian(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Rows ``∂ out[i, k] / ∂θ`` (example-major), one ``torch.autograd.grad`` call per row."""
    params = list(model.parameters())
    outputs = model(inputs)
    rows = []
    for i in range(outputs.shape[0]):
        for k in range(outputs.shape[1]):
            grads = torch.autograd.grad(outputs[i, k], params, retain_graph=True)
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3])
def test_ntk_matrix_equals_explicit_jacobian_gram(case, chunk_size):
    make_model, make_inputs = CASES[case]
    model, inputs = make_model(), make_inputs()
    jacobian = autograd_jacobian(model, inputs)
    reference = jacobian @ jacobian.T
    kernel = ntk_matrix(model, inputs, chunk_size=chunk_size)  # chunk_size < B: the blocked JVP path
    assert kernel.shape == reference.shape and kernel.dtype == DTYPE
    assert (kernel - reference).abs().max() <= 1e-12 * reference.abs().max()
    assert torch.equal(kernel, kernel.T)
    eigenvalues = torch.linalg.eigvalsh(kernel)
    assert eigenvalues.min() >= -1e-12 * eigenvalues.max()
    exact_trace = ntk_trace(model, inputs, method="exact").trace
    assert torch.trace(kernel).item() == pytest.approx(exact_trace, rel=1e-12)


def test_ntk_matrix_ordering_is_example_major():
    model, inputs = CASES["mlp"][0](), CASES["mlp"][1]()
    kernel = ntk_matrix(model, inputs).reshape(7, 3, 7, 3)
    params = list(model.parameters())

    def grad_of(i, k):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(model(inputs)[i, k], params)])

    assert kernel[4, 2, 1, 0].item() == pytest.approx(
        torch.dot(grad_of(4, 2), grad_of(1, 0)).item(), rel=1e-12
    )


def test_ntk_matrix_params_subset():
    model, inputs = CASES["mlp"][0](), CASES["mlp"][1]()
    jacobian = autograd_jacobian(model, inputs)[:, -(6 * 3 + 3) :]  # the last Linear's weight and bias
    kernel = ntk_matrix(model, inputs, params="2.*")
    assert torch.allclose(kernel, jacobian @ jacobian.T, rtol=0, atol=1e-12 * kernel.abs().max().item())


def test_ntk_matrix_refuses_large_batches():
    model = nn.Linear(1, 1).to(DTYPE)
    with pytest.raises(ValueError, match="inputs"):
        ntk_matrix(model, torch.zeros(NTK_MATRIX_MAX_ROWS + 1, 1, dtype=DTYPE))
    assert ntk_matrix(model, torch.zeros(3, 1, dtype=DTYPE)).shape == (3, 3)
    with pytest.raises(ValueError, match="chunk_size"):
        ntk_matrix(model, torch.zeros(3, 1, dtype=DTYPE), chunk_size=0)


# ----------------------------------------------------------------------------------------------- alignment


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


# ------------------------------------------------------------------------------------------- eigenvalues


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("k", [1, 3])
def test_lambda_max_equals_dense_eigvalsh(case, k):
    make_model, make_inputs = CASES[case]
    model, inputs = make_model(), make_inputs()
    jacobian = autograd_jacobian(model, inputs)
    reference = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0)[:k]
    result = ntk_lambda_max(model, inputs, k=k, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert result.converged
    assert torch.allclose(result.eigenvalues, reference, rtol=1e-6, atol=0)
    top = result.eigenvectors[:, 0]
    assert torch.allclose(
        jacobian @ (jacobian.T @ top), result.eigenvalues[0] * top, atol=1e-6 * reference[0]
    )


def test_lambda_max_warm_start_and_operator():
    model, inputs = CASES["mlp"][0](), CASES["mlp"][1]()
    first = ntk_lambda_max(model, inputs, generator=torch.Generator().manual_seed(0))
    warm = ntk_lambda_max(model, inputs, v0=first.eigenvectors[:, 0])
    assert warm.eigenvalues[0].item() == pytest.approx(first.eigenvalues[0].item(), rel=1e-6)
    operator = ntk_operator(model, inputs)
    jacobian = autograd_jacobian(model, inputs)
    v = torch.randn(operator.dim, dtype=DTYPE, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(operator.matvec(v), jacobian @ (jacobian.T @ v), rtol=1e-12, atol=1e-12)


def test_gauss_newton_relation_of_lambda_max():
    """At zero residual the MSE Hessian is the Gauss–Newton matrix: λ_max(H) = λ_max(Θ)/B for
    (1/(2B)) Σ‖f − y‖², and 2 λ_max(Θ)/(B·K) for torch.nn.MSELoss() (as the docstring states)."""
    model, inputs = CASES["mlp"][0](), CASES["mlp"][1]()
    batch, k = inputs.shape[0], 3
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    targets = model(inputs).detach()  # zero residual

    def unflatten(theta):
        out, offset = {}, 0
        for name, shape in zip(names, shapes):
            out[name] = theta[offset : offset + shape.numel()].reshape(shape)
            offset += shape.numel()
        return out

    def half_sum_loss(theta):
        f = torch.func.functional_call(model, unflatten(theta), (inputs,))
        return 0.5 * (f - targets).pow(2).sum() / batch

    def torch_mse_loss(theta):
        return nn.functional.mse_loss(torch.func.functional_call(model, unflatten(theta), (inputs,)), targets)

    lam = ntk_lambda_max(model, inputs, tol=1e-10, generator=torch.Generator().manual_seed(0)).eigenvalues[0]
    for loss, factor in [(half_sum_loss, 1.0 / batch), (torch_mse_loss, 2.0 / (batch * k))]:
        hessian = torch.autograd.functional.hessian(loss, flat)
        assert torch.linalg.eigvalsh(hessian)[-1].item() == pytest.approx(factor * lam.item(), rel=1e-6)


def test_lambda_max_validation():
    model, inputs = tiny_mlp(), torch.randn(2, 4, dtype=DTYPE)
    with pytest.raises(ValueError, match="`k`"):
        ntk_lambda_max(model, inputs, k=0)
    with pytest.raises(ValueError, match="`k`"):
        ntk_lambda_max(model, inputs, k=7)  # B·K = 6
    model.train()
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).to(DTYPE)
    with pytest.raises(ValueError, match="model.eval"):
        ntk_lambda_max(bn, inputs)


class _TanhWithoutForwardMode(torch.autograd.Function):
    """tanh with a backward (itself differentiable) but no forward-mode derivative, like the fused LSTM/GRU
    cells on CUDA."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class _NoForwardModeMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.second(_TanhWithoutForwardMode.apply(self.first(x)))


def test_lambda_max_of_a_model_without_forward_mode_derivatives_equals_dense_eigvalsh():
    """Θ v = J (Jᵀ v): where J t has no forward-mode derivative it is taken by two reverse passes."""
    from spectral_testing.references import explicit_jacobian

    torch.manual_seed(0)
    model = _NoForwardModeMLP().double()
    inputs = torch.randn(5, 4, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="jvp"):  # the premise: no forward mode through this model
        torch.func.jvp(lambda p: torch.func.functional_call(model, p, (inputs,)), (params,), (params,))
    jacobian = explicit_jacobian(model, inputs)
    exact = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0)[:2]
    result = ntk_lambda_max(model, inputs, k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.eigenvalues, exact, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_ntk_matrix_of_a_model_without_forward_mode_derivatives_equals_the_explicit_gram(chunk_size):
    """One block needs reverse mode only; with chunks the columns J J_aᵀ fall back to two reverse passes each."""
    from spectral_testing.references import explicit_jacobian

    torch.manual_seed(0)
    model = _NoForwardModeMLP().double()
    inputs = torch.randn(5, 4, dtype=torch.float64)
    jacobian = explicit_jacobian(model, inputs)
    kernel = ntk_matrix(model, inputs, chunk_size=chunk_size)
    torch.testing.assert_close(kernel, jacobian @ jacobian.T, rtol=1e-10, atol=1e-12)


def test_ntk_of_a_checkpointed_model_equals_the_explicit_jacobian():
    from spectral_testing.models import CheckpointedMLP
    from spectral_testing.references import explicit_jacobian

    torch.manual_seed(0)
    model = CheckpointedMLP().double()
    twin = CheckpointedMLP(checkpointed=False).double()
    twin.load_state_dict(model.state_dict())
    inputs = torch.randn(5, 4, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="saved tensor hooks"):  # the premise
        torch.func.vjp(lambda p: torch.func.functional_call(model, p, (inputs,)), params)
    jacobian = explicit_jacobian(twin, inputs)
    kernel = jacobian @ jacobian.T
    top = torch.linalg.eigvalsh(kernel).flip(0)[:2]
    result = ntk_lambda_max(model, inputs, k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.eigenvalues, top, rtol=1e-8, atol=1e-10)
    assert ntk_trace(model, inputs, method="exact").trace == pytest.approx(float(kernel.trace()), rel=1e-10)
    with pytest.warns(UserWarning, match="per-example Jacobians"):
        torch.testing.assert_close(ntk_matrix(model, inputs), kernel, rtol=1e-10, atol=1e-12)
