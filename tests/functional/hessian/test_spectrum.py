"""hessian_eigenvalues / hessian_trace / hessian_density against torch.linalg.eigvalsh of the dense Hessian.

References are float64 dense Hessians (torch.autograd.functional.hessian). Eigenvalues are checked to the
issue's bar (1e-3 relative) with the default tolerance and to 1e-8 relative with a tight one; a quadratic
with a known spectrum is checked to 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
from spectral_testing.problems import (
    DTYPE,
    cnn_with_batchnorm,
    cross_entropy,
    image_batch,
    mlp,
    regression_batch,
    seeded,
    squared_error,
)
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional.hessian.operator import HessianOperator
from lightning_spectral.functional.hessian.spectrum import (
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    warm_start_vector,
)
from lightning_spectral.linalg import guarded_start, rademacher

CASES = {
    "mlp": (mlp, squared_error, regression_batch),
    "cnn_batchnorm_eval": (lambda: cnn_with_batchnorm().eval(), cross_entropy, image_batch),
    "cnn_batchnorm_train": (lambda: cnn_with_batchnorm().train(), cross_entropy, image_batch),
}


def quadratic_problem(eigenvalues: list[float], seed: int = 0):
    """``L(θ) = ½ θᵀAθ`` on the weight of a bias-free Linear: the Hessian is exactly ``A = Q diag(λ) Qᵀ``."""
    spectrum = torch.tensor(eigenvalues, dtype=DTYPE)
    q, _ = torch.linalg.qr(
        torch.randn(len(eigenvalues), len(eigenvalues), dtype=DTYPE, generator=seeded(seed))
    )
    A = q @ torch.diag(spectrum) @ q.T
    model = nn.Linear(len(eigenvalues), 1, bias=False).to(DTYPE)

    def quadratic(net, matrix):
        theta = net.weight.reshape(-1)
        return 0.5 * theta @ matrix @ theta

    return model, quadratic, A


@pytest.mark.parametrize("case", sorted(CASES))
def test_top3_eigenvalues_match_eigvalsh(case):
    make_model, loss_fn, make_batch = CASES[case]
    model, batch = make_model(), make_batch()
    H = dense_hessian(model, loss_fn, batch)
    exact = torch.linalg.eigvalsh(H).flip(0)  # descending
    # The bar with the defaults (tol=1e-3, max_matvecs=50) ...
    default = hessian_eigenvalues(model, loss_fn, batch, k=3, generator=seeded(0))
    assert default.converged
    torch.testing.assert_close(default.eigenvalues, exact[:3], rtol=1e-3, atol=0)
    # ... and far tighter when asked.
    operator = HessianOperator(model, loss_fn, batch, method="double_backward")  # the faster one on CPU
    tight = hessian_eigenvalues(
        k=3, tol=1e-10, max_matvecs=H.shape[0], operator=operator, generator=seeded(0)
    )
    assert tight.converged
    torch.testing.assert_close(tight.eigenvalues, exact[:3], rtol=1e-8, atol=1e-12)
    vectors = tight.eigenvectors
    assert vectors.shape == (H.shape[0], 3)
    torch.testing.assert_close(vectors.T @ vectors, torch.eye(3, dtype=DTYPE), rtol=0, atol=1e-10)
    true_residuals = torch.linalg.vector_norm(H @ vectors - vectors * tight.eigenvalues, dim=0)
    assert bool((true_residuals <= 1e-8 * exact[0].abs()).all()), true_residuals
    assert tight.num_hvps <= H.shape[0]


def test_a_linear_models_triple_eigenvalues_are_all_found():
    """``nn.Linear(5, 3)`` under MSE: ``H = (2/(nK)) I_3 ⊗ [X 1]ᵀ[X 1]``, every eigenvalue three times. The
    Krylov space is invariant after 6 products (at the Hessian-vector product's rounding, 3× a dot product's
    here), then each restart finds another copy of λ_1 (reported before: λ_1, λ_1, 0.81, converged)."""
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    batch = (torch.randn(16, 5, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64))

    def loss_fn(m, b):
        return ((m(b[0]) - b[1]) ** 2).mean()

    reference = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, batch)).flip(0)[:3]
    assert float(reference[0] - reference[2]) < 1e-12  # the top eigenvalue is triple
    result = hessian_eigenvalues(model, loss_fn, batch, k=3, generator=torch.Generator().manual_seed(0))
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, reference, rtol=1e-6, atol=0)


@pytest.mark.parametrize("case", ["mlp", "cnn_batchnorm_eval"])
def test_negative_and_largest_magnitude_eigenvalues_of_an_indefinite_hessian(case):
    make_model, loss_fn, make_batch = CASES[case]
    model, batch = make_model(), make_batch()
    exact = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, batch))  # ascending
    assert exact[0] < -1e-3 * exact.abs().max()  # genuinely indefinite
    operator = HessianOperator(model, loss_fn, batch, method="double_backward")
    smallest = hessian_eigenvalues(
        k=2, which="SA", tol=1e-10, max_matvecs=100, operator=operator, generator=seeded(1)
    )
    torch.testing.assert_close(smallest.eigenvalues, exact[:2], rtol=1e-8, atol=1e-12)  # ascending
    largest = hessian_eigenvalues(
        k=2, which="LM", tol=1e-10, max_matvecs=100, operator=operator, generator=seeded(2)
    )
    by_magnitude = exact[exact.abs().argsort(descending=True)][:2]
    torch.testing.assert_close(largest.eigenvalues, by_magnitude, rtol=1e-8, atol=1e-12)


def test_quadratic_with_a_known_spectrum_is_exact():
    model, quadratic, A = quadratic_problem([5.0, 3.0, 1.0, 0.0, -2.0, -6.0])
    top = hessian_eigenvalues(model, quadratic, A, k=3, tol=1e-12, generator=seeded(0))
    torch.testing.assert_close(
        top.eigenvalues, torch.tensor([5.0, 3.0, 1.0], dtype=DTYPE), rtol=0, atol=1e-10
    )
    bottom = hessian_eigenvalues(model, quadratic, A, k=2, which="SA", tol=1e-12, generator=seeded(0))
    torch.testing.assert_close(
        bottom.eigenvalues, torch.tensor([-6.0, -2.0], dtype=DTYPE), rtol=0, atol=1e-10
    )
    magnitude = hessian_eigenvalues(model, quadratic, A, k=2, which="LM", tol=1e-12, generator=seeded(0))
    torch.testing.assert_close(
        magnitude.eigenvalues, torch.tensor([-6.0, 5.0], dtype=DTYPE), rtol=0, atol=1e-10
    )
    _, Q = torch.linalg.eigh(A)
    assert abs(float(top.eigenvectors[:, 0] @ Q[:, -1])) == pytest.approx(1.0, abs=1e-10)
    trace = hessian_trace(model, quadratic, A, num_matvecs=6, generator=seeded(0))  # covers the space
    assert trace.estimate == pytest.approx(1.0, abs=1e-10) and trace.std_error == 0.0


def test_frozen_parameters_and_parameter_subsets_give_the_sub_block_spectrum():
    model, batch = mlp(), regression_batch()
    H_full = dense_hessian(
        model, squared_error, batch
    )  # order: 0.weight(24) 0.bias(6) 2.weight(12) 2.bias(2)
    model[0].weight.requires_grad_(False)
    result = hessian_eigenvalues(
        model, squared_error, batch, k=2, tol=1e-10, max_matvecs=20, generator=seeded(0)
    )
    assert result.eigenvectors.shape == (20, 2)
    expected = torch.linalg.eigvalsh(H_full[24:, 24:]).flip(0)[:2]
    torch.testing.assert_close(result.eigenvalues, expected, rtol=1e-8, atol=1e-12)
    # A glob naming the frozen first layer selects it (the last layer alone would be a poor test: for the
    # squared error its Hessian is kron(I_2, G), every eigenvalue doubled, which single-vector Lanczos
    # finds only through an exactly invariant Krylov space).
    first_layer = hessian_eigenvalues(
        model, squared_error, batch, k=3, tol=1e-10, params=["0.*"], max_matvecs=30, generator=seeded(0)
    )
    expected = torch.linalg.eigvalsh(H_full[:30, :30]).flip(0)[:3]
    torch.testing.assert_close(first_layer.eigenvalues, expected, rtol=1e-8, atol=1e-12)
    assert not model[0].weight.requires_grad


def test_a_shared_operator_averaging_several_batches():
    model = mlp()
    batches = [regression_batch(n=8, seed=s) for s in range(3)]
    operator = HessianOperator.from_batches(model, squared_error, batches)
    H = sum(dense_hessian(model, squared_error, b) for b in batches) / 3
    exact = torch.linalg.eigvalsh(H)
    result = hessian_eigenvalues(k=2, tol=1e-10, max_matvecs=44, operator=operator, generator=seeded(0))
    torch.testing.assert_close(result.eigenvalues, exact.flip(0)[:2], rtol=1e-8, atol=1e-12)
    assert result.num_hvps == operator.num_matvecs  # one product per call, whatever the number of batches
    trace = hessian_trace(num_matvecs=44, operator=operator)
    assert trace.estimate == pytest.approx(float(exact.sum()), rel=1e-10)


def test_warm_start_after_a_small_step_needs_far_fewer_products():
    model, batch = mlp(hidden=24), regression_batch(n=64)  # P = 170
    solve = {"max_matvecs": 150, "hvp_method": "double_backward"}
    previous = hessian_eigenvalues(model, squared_error, batch, k=3, tol=1e-6, generator=seeded(0), **solve)
    assert previous.converged
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.add_(1e-3 * torch.randn(p.shape, dtype=DTYPE, generator=seeded(10 + i)))
    exact = torch.linalg.eigvalsh(dense_hessian(model, squared_error, batch)).flip(0)
    for k, v0 in ((1, previous.eigenvectors[:, 0]), (3, previous.eigenvectors)):
        # The default tolerance (1e-3), the one a training-time monitor uses.
        cold = hessian_eigenvalues(model, squared_error, batch, k=k, generator=seeded(1), **solve)
        warm = hessian_eigenvalues(model, squared_error, batch, k=k, v0=v0, generator=seeded(1), **solve)
        assert cold.converged and warm.converged
        torch.testing.assert_close(warm.eigenvalues, exact[:k], rtol=1e-4, atol=0)
        torch.testing.assert_close(cold.eigenvalues, exact[:k], rtol=1e-4, atol=0)
        # fewer products, though not 2× fewer: the guarded start gives a crossing eigenvalue a cold start's
        # share (see test_lanczos.py::test_guarded_warm_start_finds_an_eigenvalue_that_crossed_the_old_top)
        assert warm.num_hvps < cold.num_hvps, (k, warm.num_hvps, cold.num_hvps)


def test_warm_start_vector_combines_a_block_and_follows_the_operator_dtype():
    model, batch = mlp(), regression_batch()
    op = HessianOperator(model, squared_error, batch)
    block = torch.randn(44, 3, generator=seeded(0))  # float32: converted to the operator's float64
    start = warm_start_vector(block, op, seeded(2))
    assert start.dtype == DTYPE and start.shape == (44,)
    # the summed block plus an equal share of a Gaussian vector (guarded_start)
    torch.testing.assert_close(start, guarded_start(block.to(DTYPE).sum(dim=1), seeded(2)), rtol=0, atol=0)
    flat = torch.randn(44, dtype=DTYPE, generator=seeded(1))
    torch.testing.assert_close(warm_start_vector(flat, op, seeded(3)), guarded_start(flat, seeded(3)))
    with pytest.raises(ValueError, match="`v0`"):
        warm_start_vector(torch.ones(43, dtype=DTYPE), op)
    with pytest.raises(ValueError, match="`v0`"):
        hessian_eigenvalues(model, squared_error, batch, v0=torch.zeros(44, dtype=DTYPE))


def test_trace_estimators_against_the_dense_trace():
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    exact = float(torch.trace(H))
    hutchpp = hessian_trace(model, squared_error, batch, num_matvecs=30, generator=seeded(0))
    assert hutchpp.num_matvecs == 30 and hutchpp.std_error > 0
    assert abs(hutchpp.estimate - exact) <= 3 * hutchpp.std_error
    hutchinson = hessian_trace(
        model, squared_error, batch, num_matvecs=40, method="hutchinson", generator=seeded(1)
    )
    assert abs(hutchinson.estimate - exact) <= 3 * hutchinson.std_error
    # The Hutchinson estimate is the mean of zᵀHz over the generator's Rademacher probes, exactly.
    probes = rademacher((40, 44), dtype=DTYPE, generator=seeded(1))
    assert hutchinson.estimate == pytest.approx(
        float(torch.einsum("ni,ij,nj->n", probes, H, probes).mean()), rel=1e-12
    )
    covered = hessian_trace(model, squared_error, batch, num_matvecs=44)
    assert covered.estimate == pytest.approx(exact, rel=1e-12) and covered.std_error == 0.0


def test_density_moments_against_the_dense_hessian():
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    eigenvalues = torch.linalg.eigvalsh(H)
    P, num_probes = H.shape[0], 8
    density = hessian_density(
        model, squared_error, batch, num_probes=num_probes, num_steps=12, generator=seeded(2)
    )
    assert density.nodes.shape == (num_probes, 12)
    assert float(density.weights.sum()) == pytest.approx(1.0, abs=1e-12) and bool(
        (density.weights >= 0).all()
    )
    assert eigenvalues[0] - 1e-9 <= density.nodes.min() and density.nodes.max() <= eigenvalues[-1] + 1e-9
    # Gauss quadrature reproduces the probes' moments: Σ w θ^p = mean_z zᵀ H^p z / P (p = 1, 2).
    probes = rademacher((num_probes, P), dtype=DTYPE, generator=seeded(2))
    quadratic_forms = torch.einsum("ni,ij,nj->n", probes, H, probes) / P
    first_moment = float((density.weights * density.nodes).sum())
    second_moment = float((density.weights * density.nodes**2).sum())
    assert first_moment == pytest.approx(float(quadratic_forms.mean()), rel=1e-9)
    assert second_moment == pytest.approx(
        float(torch.einsum("ni,ij,nj->n", probes, H @ H, probes).mean()) / P, rel=1e-9
    )
    # ... so the first moment estimates tr(H)/P within its standard error.
    std_error = float(quadratic_forms.std()) / math.sqrt(num_probes)
    assert abs(first_moment - float(eigenvalues.mean())) <= 3 * std_error


def test_model_state_is_untouched():
    model, batch = cnn_with_batchnorm().train(), image_batch()
    model[0].weight.requires_grad_(False)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    params = [p.detach().clone() for p in model.parameters()]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    hessian_eigenvalues(model, cross_entropy, batch, k=2, generator=seeded(0))
    hessian_trace(model, cross_entropy, batch, num_matvecs=6, generator=seeded(0))
    hessian_density(model, cross_entropy, batch, num_probes=2, num_steps=4, generator=seeded(0))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), params))
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]
    assert all(m.training for m in model.modules())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert torch.equal(torch.get_rng_state(), rng)  # every draw came from the generators


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, k=0), ValueError, "`k`"),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, k=45), ValueError, "`k`.*44"),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, k=True), ValueError, "`k`"),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, k=2.0), ValueError, "`k`"),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, which="BE"), ValueError, "`which`.*'LA'"),
        (
            lambda m, b: hessian_eigenvalues(m, squared_error, b, hvp_method="exact"),
            ValueError,
            "`hvp_method`",
        ),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, params="nothing.*"), ValueError, "`params`"),
        (
            lambda m, b: hessian_eigenvalues(m, squared_error, b, k=2, max_matvecs=1),
            ValueError,
            "`max_matvecs`",
        ),
        (lambda m, b: hessian_eigenvalues(m, squared_error, b, tol=0.0), ValueError, "`tol`"),
        (lambda m, b: hessian_eigenvalues(m, squared_error), ValueError, "`batch`"),
        (
            lambda m, b: hessian_eigenvalues(operator=HessianOperator(m, squared_error, b), batch=b),
            ValueError,
            "`operator`",
        ),
        (
            lambda m, b: hessian_trace(
                operator=HessianOperator(m, squared_error, b), hvp_method="double_backward"
            ),
            ValueError,
            "`operator`.*hvp_method",
        ),
        (lambda m, b: hessian_eigenvalues(operator="op"), TypeError, "`operator`"),
        (lambda m, b: hessian_trace(m, squared_error, b, method="exact"), ValueError, "`method`.*hutchpp"),
        (lambda m, b: hessian_trace(m, squared_error, b, num_matvecs=2), ValueError, "`num_matvecs`"),
        (lambda m, b: hessian_density(m, squared_error, b, num_probes=0), ValueError, "`num_probes`"),
        (  # k above the default max_matvecs (50): the message says where the 50 comes from
            lambda m, b: hessian_eigenvalues(
                nn.Linear(20, 4), squared_error, (b[0].new_zeros(4, 20), b[1]), k=60
            ),
            ValueError,
            "`max_matvecs` must be >= k = 60.*default is 50",
        ),
    ],
)
def test_validation(call, error, match):
    with pytest.raises(error, match=match):
        call(mlp(), regression_batch())


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("eigenvalue_tol", [1e-3, 1e-6])
def test_eigenvalue_tol_against_eigvalsh_of_the_full_hessian(case, eigenvalue_tol):
    """The gap-based stopping rule on real Hessians: each of the top 3 eigenvalues within ``eigenvalue_tol``
    (relative) of the dense reference, at no more products than the residual test with the same guarantee."""
    make_model, loss_fn, make_batch = CASES[case]
    model, batch = make_model(), make_batch()
    exact = torch.linalg.eigvalsh(dense_hessian(model, loss_fn, batch)).flip(0)[:3]
    operator = HessianOperator(model, loss_fn, batch, method="double_backward")
    quadratic = hessian_eigenvalues(
        k=3,
        tol=1e-12,
        eigenvalue_tol=eigenvalue_tol,
        max_matvecs=operator.dim,
        operator=operator,
        generator=seeded(0),
    )
    residual = hessian_eigenvalues(
        k=3, tol=eigenvalue_tol, max_matvecs=operator.dim, operator=operator, generator=seeded(0)
    )
    assert quadratic.converged and residual.converged
    error = (quadratic.eigenvalues - exact).abs()
    assert bool((error <= eigenvalue_tol * exact.abs()).all()), (error / exact.abs(), quadratic.num_hvps)
    assert quadratic.num_hvps <= residual.num_hvps
