"""ntk_lambda_max and ntk_operator against eigvalsh of the Gram matrix of the explicit Jacobian (built row by
row with ``torch.autograd.grad``), in float64. Tolerance: eigenvalues to 1e-6 relative (the Lanczos
tolerance), 1e-8 with a tight one.
"""

from __future__ import annotations

import pytest
import torch
from spectral_testing.problems import DTYPE, NTK_CASES, NoForwardModeMLP, tiny_mlp
from spectral_testing.references import autograd_jacobian, explicit_jacobian
from torch import nn

from lightning_spectral.functional.ntk.eigenvalues import ntk_lambda_max, ntk_operator

CASES = NTK_CASES


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


def test_lambda_max_of_a_model_without_forward_mode_derivatives_equals_dense_eigvalsh():
    """Θ v = J (Jᵀ v): where J t has no forward-mode derivative it is taken by two reverse passes."""
    torch.manual_seed(0)
    model = NoForwardModeMLP().double()
    inputs = torch.randn(5, 4, dtype=torch.float64)
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(RuntimeError, match="jvp"):  # the premise: no forward mode through this model
        torch.func.jvp(lambda p: torch.func.functional_call(model, p, (inputs,)), (params,), (params,))
    jacobian = explicit_jacobian(model, inputs)
    exact = torch.linalg.eigvalsh(jacobian @ jacobian.T).flip(0)[:2]
    result = ntk_lambda_max(model, inputs, k=2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.eigenvalues, exact, rtol=1e-8, atol=1e-10)
