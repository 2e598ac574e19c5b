"""Central-difference Hessian-vector products through the model's own backward (the sharded path's products),
against the exact dense Hessian: products within 1e-7 (float64) and 2e-4 (float32) relative, eigenvalues within
1e-8 (float64); the model (parameters bit-exact, ``.grad`` by identity, buffers, RNG) left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_spectral.functional.hessian.batch_sharpness import batch_rayleigh_quotients
from lightning_spectral.functional.hessian.finite_difference import (
    FiniteDifferenceHessian,
    finite_difference_step,
)
from lightning_spectral.functional.hessian.operator import HessianOperator
from lightning_spectral.functional.hessian.spectrum import hessian_density, hessian_eigenvalues, hessian_trace


def loss_fn(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def mlp(dtype, extra=()):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), *extra, nn.Tanh(), nn.Linear(6, 2)).to(dtype)


def batches(dtype, n=2):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(16, 4, generator=generator), torch.randn(16, 2, generator=generator)) for _ in range(n)
    ]


def as_dtype(items, dtype):
    return [tuple(t.to(dtype) for t in b) for b in items]


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-7), (torch.float32, 2e-4)])
def test_products_match_the_exact_hessian_of_the_batch_average(dtype, rtol):
    model = mlp(dtype)
    data = as_dtype(batches(dtype), dtype)
    exact = HessianOperator.from_batches(
        mlp(torch.float64), loss_fn, as_dtype(data, torch.float64)
    ).to_dense()
    operator = FiniteDifferenceHessian(model, loss_fn, data)
    assert operator.dim == operator.size == exact.shape[0]
    generator = torch.Generator().manual_seed(2)
    for _ in range(4):
        v = torch.randn(operator.dim, dtype=dtype, generator=generator)
        reference = exact @ v.double()
        error = float((operator.matvec(v).double() - reference).norm() / reference.norm())
        assert error < rtol
    assert operator.num_matvecs == 4
    torch.testing.assert_close(
        operator.matvec(torch.zeros(operator.dim, dtype=dtype)), torch.zeros(operator.dim, dtype=dtype)
    )


def test_the_model_is_left_as_it_was():
    model = mlp(torch.float32, extra=(nn.BatchNorm1d(6), nn.Dropout(0.3)))
    model.train()
    data = batches(torch.float32)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    grad = torch.full_like(model[0].weight, 7.0)
    model[0].weight.grad = grad
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
    rng = torch.get_rng_state()
    operator = FiniteDifferenceHessian(model, loss_fn, data)
    operator.matvec(v)
    operator.batch_matvec(1, v)
    operator.batch_gradients()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name  # bit-exact
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    assert model[0].weight.grad is grad and bool((grad == 7.0).all()) and model[0].bias.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def test_dropout_masks_are_replayed_like_the_exact_operator():
    """Train-mode dropout: both operators replay the random state at construction for the first batch (and the
    state the previous batch left for the next), so they are the Hessian of the same loss."""
    model = mlp(torch.float64, extra=(nn.Dropout(0.3),))
    model.train()
    data = as_dtype(batches(torch.float64), torch.float64)
    torch.manual_seed(5)
    operator = FiniteDifferenceHessian(model, loss_fn, data)
    torch.manual_seed(5)
    exact = HessianOperator.from_batches(model, loss_fn, data)
    v = torch.randn(operator.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(operator.matvec(v), exact.matvec(v), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(operator.batch_matvec(1, v), exact.batch_matvec(1, v), rtol=1e-7, atol=1e-9)


def test_eigenvalues_trace_density_and_batch_sharpness_through_the_finite_difference_operator():
    model = mlp(torch.float64)
    data = as_dtype(batches(torch.float64), torch.float64)
    dense = HessianOperator.from_batches(model, loss_fn, data).to_dense()
    exact = torch.linalg.eigvalsh(dense).flip(0)
    operator = FiniteDifferenceHessian(model, loss_fn, data)
    result = hessian_eigenvalues(k=2, tol=1e-10, max_matvecs=operator.dim, operator=operator,
                                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(result.eigenvalues, exact[:2], rtol=1e-8, atol=1e-10)
    trace = hessian_trace(num_matvecs=operator.dim, operator=operator)  # the exact shortcut: e_i products
    assert trace.estimate == pytest.approx(float(dense.trace()), rel=1e-7)
    density = hessian_density(
        num_probes=1, num_steps=5, operator=operator, generator=torch.Generator().manual_seed(0)
    )
    assert float(density.weights.sum()) == pytest.approx(1.0)
    exact_operator = HessianOperator.from_batches(model, loss_fn, data)
    quotients = batch_rayleigh_quotients(operator)
    assert quotients == pytest.approx(batch_rayleigh_quotients(exact_operator), rel=1e-7)


def test_the_step_follows_the_rule_and_bad_vectors_are_refused():
    eps = torch.finfo(torch.float32).eps / 2
    assert finite_difference_step(torch.float32, 3.0, 2.0) == pytest.approx(eps ** (1 / 3) * 4.0 / 2.0)
    operator = FiniteDifferenceHessian(mlp(torch.float32), loss_fn, batches(torch.float32))
    with pytest.raises(ValueError, match="`v` must be a 1-D tensor"):
        operator.matvec(torch.ones(3))
    with pytest.raises(ValueError, match="dtype"):
        operator.matvec(torch.ones(operator.dim, dtype=torch.float64))
    with pytest.raises(ValueError, match="`batch`"):
        operator.batch_matvec(2, torch.ones(operator.dim))
    with pytest.raises(ValueError, match="`batches`"):
        FiniteDifferenceHessian(mlp(torch.float32), loss_fn, [])
