"""Hessian operator, eigenvalues, trace, density and batch sharpness against the dense Hessian (float64)."""

from __future__ import annotations

import pytest
import torch
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional.batch_sharpness import batch_sharpness
from lightning_spectral.functional.hessian_operator import HessianOperator
from lightning_spectral.functional.hessian_spectrum import hessian_density, hessian_eigenvalues, hessian_trace

DTYPE = torch.float64


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).to(DTYPE)


def cnn_with_batchnorm():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).to(DTYPE)


def regression_batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=DTYPE), torch.randn(n, 2, generator=g, dtype=DTYPE)


def image_batch(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g)


def mse(model, batch):
    # Written out: torch.func's forward-over-reverse fails on F.mse_loss in torch 2.13 (see hessian_operator).
    return ((model(batch[0]) - batch[1]) ** 2).mean()


def cross_entropy(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def mse_fn(forward, batch):
    return ((forward(batch[0]) - batch[1]) ** 2).mean()


def ce_fn(forward, batch):
    return nn.functional.cross_entropy(forward(batch[0]), batch[1])


CASES = [
    ("mlp", mlp, mse, mse_fn, regression_batch),
    ("cnn_bn_eval", lambda: cnn_with_batchnorm().eval(), cross_entropy, ce_fn, image_batch),
]


@pytest.mark.parametrize("name, make_model, loss_fn, ref_fn, make_batch", CASES)
@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward", "auto"])
def test_hvp_equals_dense_hessian_times_v(name, make_model, loss_fn, ref_fn, make_batch, method):
    model, batch = make_model(), make_batch()
    H = dense_hessian(model, ref_fn, batch)
    op = HessianOperator(model, loss_fn, batch, method=method)
    assert op.dim == H.shape[0]
    v = torch.randn(op.dim, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(op.matvec(v), H @ v, rtol=1e-10, atol=1e-10)
    assert torch.allclose(op.to_dense(), H, rtol=1e-10, atol=1e-10)
    assert op.num_matvecs == 1 + op.dim
    assert op.method == ("double_backward" if method == "auto" else method)


def test_batchnorm_in_train_mode_is_exact_and_leaves_buffers():
    model, batch = cnn_with_batchnorm().train(), image_batch()
    before = {n: b.clone() for n, b in model.named_buffers()}
    op = HessianOperator(model, cross_entropy, batch)
    H = dense_hessian(model, ce_fn, batch)  # train-mode BN: batch statistics, coupled examples
    v = torch.randn(op.dim, dtype=DTYPE, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op.matvec(v), H @ v, rtol=1e-9, atol=1e-10)
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), n


def test_model_state_is_untouched():
    model, batch = cnn_with_batchnorm().train(), image_batch()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    model[0].weight.requires_grad_(False)
    grads = [p.grad for p in model.parameters()]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    hessian_eigenvalues(model, cross_entropy, batch, k=2, tol=1e-6)
    hessian_trace(model, cross_entropy, batch, num_matvecs=6)
    batch_sharpness(model, cross_entropy, [batch, image_batch(seed=1)])
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


@pytest.mark.parametrize("name, make_model, loss_fn, ref_fn, make_batch", CASES)
def test_top3_eigenvalues_match_eigvalsh(name, make_model, loss_fn, ref_fn, make_batch):
    model, batch = make_model(), make_batch()
    exact = torch.linalg.eigvalsh(dense_hessian(model, ref_fn, batch))
    result = hessian_eigenvalues(model, loss_fn, batch, k=3, tol=1e-8, max_iter=200)
    assert result.converged
    torch.testing.assert_close(result.eigenvalues, exact.flip(0)[:3], rtol=1e-6, atol=1e-9)
    smallest = hessian_eigenvalues(model, loss_fn, batch, k=2, which="SA", tol=1e-8, max_iter=200)
    torch.testing.assert_close(smallest.eigenvalues, exact[:2], rtol=1e-6, atol=1e-9)
    assert exact[0] < 0  # these Hessians are indefinite: the negative end is real
    largest_magnitude = hessian_eigenvalues(model, loss_fn, batch, k=1, which="LM", tol=1e-8, max_iter=200)
    assert largest_magnitude.eigenvalues[0].abs() == pytest.approx(exact.abs().max().item(), rel=1e-6)
    # eigenvectors: H v = λ v
    H = dense_hessian(model, ref_fn, batch)
    v = result.eigenvectors[:, 0]
    assert torch.allclose(H @ v, result.eigenvalues[0] * v, atol=1e-6 * exact.abs().max().item())


def test_quadratic_with_known_spectrum():
    """L(θ) = ½ θᵀ A θ has Hessian A exactly; A has eigenvalues 5, 3, 1, 0, −2, −4."""
    eigenvalues = torch.tensor([5.0, 3.0, 1.0, 0.0, -2.0, -4.0], dtype=DTYPE)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=DTYPE, generator=torch.Generator().manual_seed(0)))
    A = q @ torch.diag(eigenvalues) @ q.T
    model = nn.Linear(6, 1, bias=False).to(DTYPE)

    def quadratic(m, batch):
        theta = m.weight.reshape(-1)
        return 0.5 * theta @ batch @ theta

    top = hessian_eigenvalues(model, quadratic, A, k=3, tol=1e-10)
    torch.testing.assert_close(top.eigenvalues, eigenvalues[:3], rtol=1e-10, atol=1e-10)
    bottom = hessian_eigenvalues(model, quadratic, A, k=2, which="SA", tol=1e-10)
    torch.testing.assert_close(
        bottom.eigenvalues, torch.tensor([-4.0, -2.0], dtype=DTYPE), rtol=1e-10, atol=1e-10
    )
    trace = hessian_trace(model, quadratic, A, num_matvecs=6)  # Hutch++ covers the 6-dim space: exact
    assert trace.estimate == pytest.approx(3.0, abs=1e-10) and trace.std_error == 0


def test_frozen_parameters_and_parameter_subsets():
    model, batch = mlp(), regression_batch()
    full_names = [n for n, _ in model.named_parameters()]
    H_full = dense_hessian(model, mse_fn, batch)
    model[0].weight.requires_grad_(False)
    op = HessianOperator(model, mse, batch)
    assert op.names == tuple(full_names[1:]) and op.dim == H_full.shape[0] - 24
    assert torch.allclose(op.to_dense(), H_full[24:, 24:], atol=1e-10)
    sub = HessianOperator(model, mse, batch, params=["2.*"])  # the last layer, by glob
    assert torch.allclose(sub.to_dense(), H_full[-14:, -14:], atol=1e-10)
    exact = torch.linalg.eigvalsh(H_full[24:, 24:]).flip(0)
    result = hessian_eigenvalues(model, mse, batch, k=2, tol=1e-8, max_iter=100)
    torch.testing.assert_close(result.eigenvalues, exact[:2], rtol=1e-6, atol=1e-9)


def test_averaging_over_batches():
    model = mlp()
    batches = [regression_batch(seed=s) for s in range(3)]
    op = HessianOperator.from_batches(model, mse, batches)
    H = sum(dense_hessian(model, mse_fn, b) for b in batches) / 3
    assert torch.allclose(op.to_dense(), H, atol=1e-10)
    loss, gradient = op.loss_and_gradient()
    assert loss == pytest.approx(sum(mse(model, b).item() for b in batches) / 3, rel=1e-12)
    assert gradient.shape == (op.dim,)


def test_warm_start_needs_fewer_hvps_after_a_small_step():
    model, batch = mlp(), regression_batch()
    cold = hessian_eigenvalues(model, mse, batch, k=1, tol=1e-3, max_iter=60)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, dtype=DTYPE, generator=torch.Generator().manual_seed(5)))
    cold_again = hessian_eigenvalues(model, mse, batch, k=1, tol=1e-3, max_iter=60)
    warm = hessian_eigenvalues(model, mse, batch, k=1, tol=1e-3, max_iter=60, v0=cold.eigenvectors)
    exact = torch.linalg.eigvalsh(dense_hessian(model, mse_fn, batch))[-1].item()
    assert warm.eigenvalues[0] == pytest.approx(exact, rel=1e-3)
    assert cold_again.eigenvalues[0] == pytest.approx(exact, rel=1e-3)
    assert warm.num_hvps * 2 <= cold_again.num_hvps, (warm.num_hvps, cold_again.num_hvps)


def test_trace_and_density_against_the_dense_hessian():
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, mse_fn, batch)
    exact_trace = torch.trace(H).item()
    estimate = hessian_trace(model, mse, batch, num_matvecs=30, generator=torch.Generator().manual_seed(0))
    assert abs(estimate.estimate - exact_trace) <= 3 * estimate.std_error + 1e-9
    hutchinson = hessian_trace(
        model, mse, batch, num_matvecs=40, method="hutchinson", generator=torch.Generator().manual_seed(1)
    )
    assert abs(hutchinson.estimate - exact_trace) <= 4 * hutchinson.std_error
    covered = hessian_trace(model, mse, batch, num_matvecs=H.shape[0])
    assert covered.estimate == pytest.approx(exact_trace, rel=1e-10)
    density = hessian_density(
        model, mse, batch, num_probes=8, num_steps=20, generator=torch.Generator().manual_seed(2)
    )
    assert density.weights.sum().item() == pytest.approx(1.0, abs=1e-10)
    eig = torch.linalg.eigvalsh(H)
    assert density.nodes.min() >= eig[0] - 1e-8 and density.nodes.max() <= eig[-1] + 1e-8
    # first moment Σ w θ estimates tr(H)/P (unbiased over probes): within a generous band
    first_moment = (density.weights * density.nodes).sum().item()
    assert first_moment == pytest.approx(exact_trace / H.shape[0], abs=0.5 * eig.abs().max().item())


def test_batch_sharpness_equals_the_rayleigh_quotient_formula():
    model = mlp()
    batches = [regression_batch(n=4, seed=s) for s in range(4)]
    result = batch_sharpness(model, mse, batches)
    expected = []
    for b in batches:
        H = dense_hessian(model, mse_fn, b)
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(mse(model, b), list(model.parameters()))])
        expected.append((g @ H @ g / (g @ g)).item())
    assert result.per_batch == pytest.approx(expected, rel=1e-10)
    assert result.value == pytest.approx(sum(expected) / 4, rel=1e-10)
    exact = torch.linalg.eigvalsh(dense_hessian(model, mse_fn, batches[0]))
    assert exact[0] - 1e-9 <= result.per_batch[0] <= exact[-1] + 1e-9  # a Rayleigh quotient


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda m, b: hessian_eigenvalues(m, mse, b, k=0), "k"),
        (lambda m, b: hessian_eigenvalues(m, mse, b, k=10_000), "k"),
        (lambda m, b: hessian_eigenvalues(m, mse, b, which="XX"), "which"),
        (lambda m, b: HessianOperator(m, mse, b, method="finite_differences"), "method"),
        (lambda m, b: HessianOperator(m, mse, b, params=["nothing.*"]), "nothing"),
        (lambda m, b: hessian_trace(m, mse, b, method="exact"), "method"),
        (lambda m, b: HessianOperator(m, mse, b).matvec(torch.ones(3, dtype=DTYPE)), "v"),
        (lambda m, b: batch_sharpness(m, mse, []), "batches"),
    ],
)
def test_validation(call, argument):
    with pytest.raises(ValueError, match=argument):
        call(mlp(), regression_batch())
