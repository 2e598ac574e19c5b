"""HessianOperator's single-batch pieces: ``batch_gradients`` and ``batch_matvec`` against explicit per-batch
gradients and dense per-batch Hessians (float64, 1e-10), and what they cost."""

from __future__ import annotations

import pytest
import torch
from spectral_testing.references import dense_hessian
from test_hessian_operator import EXACT, mlp, random_vector, regression_batch, squared_error

from lightning_spectral.functional.hessian.batch_sharpness import batch_rayleigh_quotients, batch_sharpness
from lightning_spectral.functional.hessian.operator import HessianOperator

BATCHES = [regression_batch(n=8, seed=s) for s in range(3)]


def flat_gradient(model, batch) -> torch.Tensor:
    grads = torch.autograd.grad(squared_error(model, batch), list(model.parameters()))
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward", "auto"])
@pytest.mark.parametrize("products_first", [False, True])
def test_batch_gradients_and_products_are_each_batchs_own(method, products_first):
    model = mlp()
    op = HessianOperator.from_batches(model, squared_error, BATCHES, method=method)
    v = random_vector(44)
    average = sum(dense_hessian(model, squared_error, b) for b in BATCHES) / 3
    if products_first:  # the graphs exist: the gradients take one more evaluation
        torch.testing.assert_close(op.matvec(v), average @ v, **EXACT)
    gradients = op.batch_gradients()
    assert len(gradients) == 3
    for index, batch in enumerate(BATCHES):
        torch.testing.assert_close(gradients[index], flat_gradient(model, batch), **EXACT)
        H = dense_hessian(model, squared_error, batch)
        torch.testing.assert_close(op.batch_matvec(index, v), H @ v, **EXACT)
    torch.testing.assert_close(op.matvec(v), average @ v, **EXACT)  # the whole operator is unchanged
    assert (op.num_matvecs, op.num_batch_matvecs) == (1 + products_first, 3)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ["forward_over_reverse", "auto"])
def test_a_later_batchs_product_can_come_first_under_dropout(method):
    """Batch ``b`` replays the random state the evaluation of batch ``b − 1`` ended in: a product through a later
    batch first evaluates the earlier ones (before: "batch 2 evaluated before batch 1"; "auto" fell back to
    double backward with that as its reason). The masks are those of the in-order evaluation."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)
    ).to(torch.float64)
    batches = [regression_batch(n=8, seed=s) for s in range(3)]
    v = torch.randn(58, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    first = HessianOperator.from_batches(model, squared_error, batches, method=method)
    later_first = first.batch_matvec(2, v)
    assert first.method == "forward_over_reverse" and first.fallback_reason is None
    torch.manual_seed(5)
    in_order = HessianOperator.from_batches(model, squared_error, batches, method="double_backward")
    in_order.matvec(v)  # evaluates batches 0, 1, 2 in order
    torch.testing.assert_close(later_first, in_order.batch_matvec(2, v), **EXACT)
    torch.testing.assert_close(first.batch_matvec(1, v), in_order.batch_matvec(1, v), **EXACT)


def test_batch_gradients_come_with_the_graphs_before_the_first_product():
    """Double backward: the per-batch gradients cost no evaluation beyond the graphs the products build; after
    a product the graphs keep no gradient values, so they are evaluated again (one loss call per batch)."""
    calls = []

    def counting(net, batch):
        calls.append(1)
        return squared_error(net, batch)

    op = HessianOperator.from_batches(mlp(), counting, BATCHES, method="double_backward")
    op.batch_gradients()
    op.matvec(random_vector(44))
    for index in range(3):
        op.batch_matvec(index, random_vector(44, seed=index))
    assert len(calls) == 3
    op.batch_gradients()
    assert len(calls) == 6


def bias_sum(net, batch):
    """Linear in the output bias: its gradient does not depend on θ, so this batch keeps no gradient edges."""
    return net(batch[0]).sum()


def test_a_batch_without_curvature_in_any_position():
    """Batches whose gradients keep no graph edges (a loss linear in the selected parameter) give ``H_b v = 0``
    wherever they stand, and the other batches' products still pass through their own edges only."""
    model = mlp()
    linear = (regression_batch(n=8, seed=9)[0], None)

    def loss(net, batch):
        return bias_sum(net, batch) if batch[1] is None else squared_error(net, batch)

    v = torch.tensor([0.3, -1.1], dtype=torch.float64)
    for batches in ([linear, *BATCHES[:2]], [BATCHES[0], linear, BATCHES[1]], [*BATCHES[:2], linear]):
        op = HessianOperator.from_batches(model, loss, batches, params=["2.bias"], method="double_backward")
        for index, batch in enumerate(batches):
            expected = dense_hessian(model, loss, batch, names=["2.bias"]) @ v
            torch.testing.assert_close(op.batch_matvec(index, v), expected, **EXACT)
        average = sum(dense_hessian(model, loss, b, names=["2.bias"]) for b in batches) / 3
        torch.testing.assert_close(op.matvec(v), average @ v, **EXACT)


def test_reduce_fn_applies_to_batch_gradients_and_products_without_averaging():
    model = mlp()
    op = HessianOperator.from_batches(
        model, squared_error, BATCHES, method="double_backward", reduce_fn=lambda t: 2.0 * t
    )
    v = random_vector(44)
    gradients = op.batch_gradients()
    for index, batch in enumerate(BATCHES):
        torch.testing.assert_close(gradients[index], 2.0 * flat_gradient(model, batch), **EXACT)
        H = dense_hessian(model, squared_error, batch)
        torch.testing.assert_close(op.batch_matvec(index, v), 2.0 * (H @ v), **EXACT)


@pytest.mark.parametrize("batch", [-1, 3, 1.0, True, None])
def test_batch_matvec_rejects_a_batch_index_out_of_range(batch):
    op = HessianOperator.from_batches(mlp(), squared_error, BATCHES)
    with pytest.raises(ValueError, match=r"`batch` must be an int in \[0, 3\)"):
        op.batch_matvec(batch, random_vector(44))


def test_batch_matvec_checks_the_vector_like_matvec():
    op = HessianOperator.from_batches(mlp(), squared_error, BATCHES)
    with pytest.raises(ValueError, match="length dim = 44"):
        op.batch_matvec(0, torch.zeros(43, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype torch.float64"):
        op.batch_matvec(0, torch.zeros(44))


def test_rayleigh_quotients_of_one_operator_equal_the_batch_sharpness_of_separate_ones():
    """``batch_rayleigh_quotients`` on one operator over all batches (the Hessian monitor's way) gives what
    ``batch_sharpness`` gives with one operator per batch, and both equal the dense formula."""
    model = mlp()
    op = HessianOperator.from_batches(model, squared_error, BATCHES, method="double_backward")
    quotients = batch_rayleigh_quotients(op, op.batch_gradients())
    separate = batch_sharpness(model, squared_error, BATCHES).per_batch
    for index, batch in enumerate(BATCHES):
        g, H = flat_gradient(model, batch), dense_hessian(model, squared_error, batch)
        assert quotients[index] == pytest.approx((g @ H @ g / (g @ g)).item(), rel=1e-10)
        assert separate[index] == pytest.approx(quotients[index], rel=1e-10)
