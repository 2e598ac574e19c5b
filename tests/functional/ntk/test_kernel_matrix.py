"""ntk_matrix against a dense reference, in float64.

The reference Jacobian here is built row by row with ``torch.autograd.grad`` on the whole-batch output
(no torch.func at all), so it checks the per-example vmap plumbing and the example-major ordering too.
Tolerance: kernel entries to 1e-12 of the kernel's largest entry.
"""

from __future__ import annotations

import pytest
import torch
from spectral_testing.models import CheckpointedMLP
from spectral_testing.problems import DTYPE, NTK_CASES, NoForwardModeMLP
from spectral_testing.references import autograd_jacobian, explicit_jacobian
from torch import nn

from lightning_spectral.functional.ntk.eigenvalues import ntk_lambda_max
from lightning_spectral.functional.ntk.kernel_matrix import NTK_MATRIX_MAX_ROWS, ntk_matrix
from lightning_spectral.functional.ntk.trace import ntk_trace

CASES = NTK_CASES


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


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_ntk_matrix_of_a_model_without_forward_mode_derivatives_equals_the_explicit_gram(chunk_size):
    """One block needs reverse mode only; with chunks the columns J J_aᵀ fall back to two reverse passes each."""
    torch.manual_seed(0)
    model = NoForwardModeMLP().double()
    inputs = torch.randn(5, 4, dtype=torch.float64)
    jacobian = explicit_jacobian(model, inputs)
    kernel = ntk_matrix(model, inputs, chunk_size=chunk_size)
    torch.testing.assert_close(kernel, jacobian @ jacobian.T, rtol=1e-10, atol=1e-12)


def test_ntk_of_a_checkpointed_model_equals_the_explicit_jacobian():
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
