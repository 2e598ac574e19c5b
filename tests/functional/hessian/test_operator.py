"""HessianOperator and parameter selection against the dense Hessian (torch.autograd.functional.hessian).

Every product is checked in float64 against ``H v`` with ``H`` the dense Hessian of the same loss in the
flat parameters, to 1e-10; and the model (values, ``.grad``, buffers, ``requires_grad``, modes) and the
global RNG must be exactly as before.

HessianOperator's single-batch pieces: ``batch_gradients`` and ``batch_matvec`` against explicit per-batch
gradients and dense per-batch Hessians (float64, 1e-10), and what they cost.
"""

from __future__ import annotations

import copy

import pytest
import torch
from spectral_testing.problems import (
    DTYPE,
    EXACT,
    cnn_with_batchnorm,
    cross_entropy,
    image_batch,
    mlp,
    random_vector,
    regression_batch,
    squared_error,
    torch_mse,
)
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional._common.parameter_selection import ParameterLayout, select_parameters
from lightning_spectral.functional.hessian.batch_sharpness import batch_rayleigh_quotients, batch_sharpness
from lightning_spectral.functional.hessian.operator import HVP_METHODS, HessianOperator

METHODS = ["forward_over_reverse", "double_backward", "auto"]


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "rng": torch.get_rng_state(),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    for name, value in before["params"].items():
        assert torch.equal(after["params"][name], value), name
    for name, grad in before["grads"].items():
        assert (after["grads"][name] is None) == (grad is None), name
        assert grad is None or torch.equal(after["grads"][name], grad), name
    assert after["requires_grad"] == before["requires_grad"]
    assert after["buffers"].keys() == before["buffers"].keys()
    for name, value in before["buffers"].items():
        assert torch.equal(after["buffers"][name], value), name
    assert after["training"] == before["training"]
    assert torch.equal(after["rng"], before["rng"])


CASES = {
    "mlp_squared_error": (mlp, squared_error, regression_batch),
    "cnn_batchnorm_eval": (lambda: cnn_with_batchnorm().eval(), cross_entropy, image_batch),
    "cnn_batchnorm_train": (lambda: cnn_with_batchnorm().train(), cross_entropy, image_batch),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", METHODS)
def test_products_equal_the_dense_hessian(case, method):
    make_model, loss_fn, make_batch = CASES[case]
    model, batch = make_model(), make_batch()
    before = snapshot(model)
    H = dense_hessian(model, loss_fn, batch)  # train-mode BatchNorm: batch statistics, buffers are copies
    op = HessianOperator(model, loss_fn, batch, method=method)
    assert op.dim == H.shape[0] and op.dtype == DTYPE and op.num_batches == 1
    v = random_vector(op.dim)
    torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)
    torch.testing.assert_close(op(v), H @ v, **EXACT)
    dense = op.to_dense()
    torch.testing.assert_close(dense, H, **EXACT)
    torch.testing.assert_close(dense, dense.T, **EXACT)
    assert op.num_matvecs == 2 + op.dim
    # torch.func transforms every model here, so "auto" resolves to forward-over-reverse.
    assert op.method == ("forward_over_reverse" if method == "auto" else method)
    assert op.fallback_reason is None
    assert_unchanged(model, before)


def test_auto_falls_back_to_double_backward_where_torch_func_fails():
    """F.mse_loss has no usable forward-mode derivative of its backward in torch 2.13."""
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, torch_mse, batch)
    with pytest.raises(RuntimeError):
        HessianOperator(model, torch_mse, batch, method="forward_over_reverse").matvec(random_vector(44))
    op = HessianOperator(model, torch_mse, batch)
    assert op.method == "auto"
    torch.testing.assert_close(op.matvec(random_vector(44)), H @ random_vector(44), **EXACT)
    assert op.method == "double_backward" and "ZeroTensor" in op.fallback_reason
    torch.testing.assert_close(op.to_dense(), H, **EXACT)


def checkpointed_squared_error(use_reentrant: bool):
    """``squared_error`` with the layers after the first under activation checkpointing (recomputed in
    backward; their input depends on the parameters, as in any real use)."""

    def loss(net, batch):
        output = torch.utils.checkpoint.checkpoint(net[1:], net[0](batch[0]), use_reentrant=use_reentrant)
        return ((output - batch[1]) ** 2).mean()

    return loss


def test_activation_checkpointing_is_exact_by_double_backward():
    """Non-reentrant checkpointing (PyTorch's recommended form): double backward differentiates through the
    recomputation exactly; torch.func refuses its saved-tensor hooks, so "auto" falls back. Reentrant
    checkpointing refuses autograd.grad: a loud error, never a Hessian without the checkpointed block."""
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    checkpointed = checkpointed_squared_error(use_reentrant=False)
    torch.testing.assert_close(
        HessianOperator(model, checkpointed, batch, method="double_backward").to_dense(), H, **EXACT
    )
    op = HessianOperator(model, checkpointed, batch)
    torch.testing.assert_close(op.to_dense(), H, **EXACT)
    assert op.method == "double_backward" and "saved tensor hooks" in op.fallback_reason
    reentrant = HessianOperator(model, checkpointed_squared_error(use_reentrant=True), batch)
    with pytest.raises(RuntimeError, match="use_reentrant"):
        reentrant.matvec(random_vector(44))


def test_model_state_is_untouched_by_every_entry_point():
    model, batch = cnn_with_batchnorm().train(), image_batch()
    model[0].weight.requires_grad_(False)
    model[1].eval()  # mixed modes must survive as they are
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = [p.grad for p in model.parameters()]
    before = snapshot(model)
    for method in ("forward_over_reverse", "double_backward"):
        op = HessianOperator(model, cross_entropy, batch, method=method)
        op.matvec(random_vector(op.dim))
        op.loss_and_gradient()
        op = HessianOperator.from_batches(model, cross_entropy, [batch, image_batch(seed=1)], method=method)
        op.matvec(random_vector(op.dim))
    assert_unchanged(model, before)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))  # not even replaced


def test_the_operator_is_the_hessian_at_construction_time():
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    operators = [HessianOperator(model, squared_error, batch, method=m) for m in METHODS]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # an optimizer step after construction
    H_moved = dense_hessian(model, squared_error, batch)
    assert (H_moved - H).abs().max() > 1e-2
    v = random_vector(44)
    for op in operators:
        torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)


def test_copy_params_false_reads_the_models_own_storage():
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    v = random_vector(44)
    operators = {
        m: HessianOperator(model, squared_error, batch, method=m, copy_params=False) for m in METHODS
    }
    for op in operators.values():  # before any change: the same Hessian as with copies
        torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)
    before = snapshot(model)
    assert_unchanged(model, before)  # products with aliased storage write nothing to the model
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # an in-place step reaches an operator without copies ...
    H_moved = dense_hessian(model, squared_error, batch)
    torch.testing.assert_close(
        HessianOperator(model, squared_error, batch, method="forward_over_reverse", copy_params=False).matvec(
            v
        ),
        H_moved @ v,
        **EXACT,
    )
    # ... and a double-backward graph built before the step refuses to mix the two points (autograd's
    # version counter) rather than return a wrong product.
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        operators["double_backward"].matvec(v)
    with pytest.raises(TypeError, match="`copy_params`"):
        HessianOperator(model, squared_error, batch, copy_params=1)


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward"])
def test_loss_and_gradient_before_after_and_between_products(method):
    model, batch = mlp(), regression_batch()
    H = dense_hessian(model, squared_error, batch)
    expected = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(squared_error(model, batch), list(model.parameters()))]
    )
    op = HessianOperator(model, squared_error, batch, method=method)
    first = op.loss_and_gradient()  # double backward: builds the graph and hands out its gradient
    v = random_vector(44)
    torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)
    second = op.loss_and_gradient()  # evaluated again: the graph keeps no gradient values
    torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)
    for loss, gradient in (first, second):
        assert loss == pytest.approx(squared_error(model, batch).item(), rel=1e-13)
        torch.testing.assert_close(gradient, expected, **EXACT)
    assert first[1] is not second[1]
    assert op.num_matvecs == 2


@pytest.mark.parametrize("method", METHODS)
def test_frozen_parameters_are_excluded(method):
    model, batch = mlp(), regression_batch()
    model[0].weight.requires_grad_(False)  # 24 entries
    trainable = ["0.bias", "2.weight", "2.bias"]
    op = HessianOperator(model, squared_error, batch, method=method)
    assert op.names == tuple(trainable) and op.dim == 44 - 24
    H_full = dense_hessian(model, squared_error, batch, names=[n for n, _ in model.named_parameters()])
    torch.testing.assert_close(op.to_dense(), H_full[24:, 24:], **EXACT)
    torch.testing.assert_close(op.to_dense(), dense_hessian(model, squared_error, batch), **EXACT)


@pytest.mark.parametrize(
    "params, names, block",
    [
        (["2.*"], ("2.weight", "2.bias"), slice(30, 44)),  # glob
        ("0", ("0.weight", "0.bias"), slice(0, 30)),  # module prefix
        (["*.bias", "0.bias"], ("0.bias", "2.bias"), [24, 25, 26, 27, 28, 29, 42, 43]),  # overlapping globs
    ],
)
def test_parameter_subsets_are_sub_blocks_of_the_dense_hessian(params, names, block):
    model, batch = mlp(), regression_batch()
    H_full = dense_hessian(model, squared_error, batch)
    for method in ("forward_over_reverse", "double_backward"):
        op = HessianOperator(model, squared_error, batch, params=params, method=method)
        assert op.names == names
        expected = H_full[block][:, block] if isinstance(block, list) else H_full[block, block]
        torch.testing.assert_close(op.to_dense(), expected, **EXACT)


def test_naming_a_frozen_parameter_selects_it():
    model, batch = mlp(), regression_batch()
    model[2].bias.requires_grad_(False)
    op = HessianOperator(model, squared_error, batch, params=["2.bias"])
    assert op.names == ("2.bias",)
    torch.testing.assert_close(
        op.to_dense(), dense_hessian(model, squared_error, batch, names=["2.bias"]), **EXACT
    )
    assert not model[2].bias.requires_grad


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward"])
def test_several_batches_average_hessian_loss_and_gradient(method):
    model = mlp()
    batches = [regression_batch(n=8, seed=s) for s in range(3)]
    op = HessianOperator.from_batches(model, squared_error, batches, method=method)
    assert op.num_batches == 3
    H = sum(dense_hessian(model, squared_error, b) for b in batches) / 3
    v = random_vector(44)
    torch.testing.assert_close(op.matvec(v), H @ v, **EXACT)
    loss, gradient = op.loss_and_gradient()
    params = list(model.parameters())
    expected_loss = sum(squared_error(model, b) for b in batches) / 3
    expected_gradient = torch.cat([g.reshape(-1) for g in torch.autograd.grad(expected_loss, params)])
    assert loss == pytest.approx(expected_loss.item(), rel=1e-13)
    torch.testing.assert_close(gradient, expected_gradient, **EXACT)
    assert all(p.grad is None for p in params)


def test_a_tuple_batch_is_one_batch_and_never_a_list_of_batches():
    model, batch = mlp(), regression_batch()
    assert HessianOperator(model, squared_error, batch).num_batches == 1
    assert HessianOperator(model, squared_error, list(batch)).num_batches == 1
    with pytest.raises(TypeError, match="`batches` must be a list"):
        HessianOperator.from_batches(model, squared_error, batch)
    with pytest.raises(ValueError, match="`batches`"):
        HessianOperator.from_batches(model, squared_error, [])


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward"])
def test_reduce_fn_is_applied_to_every_product_and_to_the_gradient(method):
    model, batch = mlp(), regression_batch()
    calls = []

    def reduce_fn(t):
        calls.append(t.shape)
        return 3.0 * t

    H = dense_hessian(model, squared_error, batch)
    op = HessianOperator(model, squared_error, batch, method=method, reduce_fn=reduce_fn)
    v = random_vector(44)
    torch.testing.assert_close(op.matvec(v), 3.0 * (H @ v), **EXACT)
    loss, gradient = op.loss_and_gradient()
    expected = torch.cat(
        [g.reshape(-1) for g in torch.autograd.grad(squared_error(model, batch), list(model.parameters()))]
    )
    torch.testing.assert_close(gradient, 3.0 * expected, **EXACT)
    assert loss == pytest.approx(3.0 * squared_error(model, batch).item(), rel=1e-13)
    assert calls == [(44,), (1,), (44,)]


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward"])
def test_dropout_is_one_fixed_mask_per_batch_and_the_global_rng_is_untouched(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 2)).to(DTYPE).train()
    batches = [regression_batch(n=8, seed=s) for s in range(2)]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    op = HessianOperator.from_batches(model, squared_error, batches, method=method)
    first = op.to_dense()
    second = op.to_dense()
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # a fixed operator, not a random one
    torch.testing.assert_close(first, first.T, **EXACT)
    # Reference: the two batches' losses evaluated one after the other from the same RNG state.
    torch.set_rng_state(state)
    H = sum(dense_hessian(model, squared_error, b) for b in batches) / 2
    torch.testing.assert_close(first, H, **EXACT)
    assert not torch.allclose(H, dense_hessian(model.eval(), squared_error, batches[0]) / 2)  # masks matter


class HalfUsed(nn.Module):
    """A model whose second layer never enters the output."""

    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(3, 2).to(DTYPE)
        self.unused = nn.Linear(3, 1).to(DTYPE)

    def forward(self, x):
        return self.used(x)


@pytest.mark.parametrize("method", ["forward_over_reverse", "double_backward"])
def test_zero_and_partially_zero_hessians(method):
    torch.manual_seed(0)
    model = HalfUsed()
    x = torch.randn(5, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(0))

    def linear_loss(net, batch):  # linear in θ: the Hessian is zero
        return net(batch).sum()

    op = HessianOperator(model, linear_loss, x, method=method)
    assert torch.equal(op.to_dense(), torch.zeros(12, 12, dtype=DTYPE))
    _, gradient = op.loss_and_gradient()
    assert torch.equal(gradient[8:], torch.zeros(4, dtype=DTYPE)) and gradient[:8].abs().sum() > 0

    def quadratic_loss(net, batch):
        return (net(batch) ** 2).sum()

    H = dense_hessian(model, quadratic_loss, x)
    op = HessianOperator(model, quadratic_loss, x, method=method)
    torch.testing.assert_close(op.to_dense(), H, **EXACT)
    assert torch.equal(H[8:], torch.zeros(4, 12, dtype=DTYPE)) and H[:8, :8].abs().sum() > 0


def test_float32_products_under_no_grad():
    reference_model, batch = mlp(), regression_batch()
    H = dense_hessian(reference_model, squared_error, batch).float()
    model, batch = copy.deepcopy(reference_model).float(), tuple(t.float() for t in batch)
    v = torch.randn(44, generator=torch.Generator().manual_seed(0))
    for method in ("forward_over_reverse", "double_backward"):
        op = HessianOperator(model, squared_error, batch, method=method)
        with torch.no_grad():
            hv = op.matvec(v)
        assert hv.dtype == torch.float32 and op.dtype == torch.float32
        torch.testing.assert_close(hv, H @ v, rtol=1e-4, atol=1e-5)


def test_parameter_layout_round_trip_and_checks():
    model = cnn_with_batchnorm()
    selected = select_parameters(model, ["0.*", "4.weight"])
    assert list(selected) == ["0.weight", "0.bias", "4.weight"]  # model order
    assert all(selected[n] is p for n, p in model.named_parameters() if n in selected)  # live, not copies
    layout = ParameterLayout.from_tensors(selected)
    assert layout.dim == 18 + 2 + 54 and layout.numels == (18, 2, 54)
    flat = layout.flatten(selected)
    torch.testing.assert_close(
        flat, torch.cat([p.detach().reshape(-1) for p in selected.values()]), rtol=0, atol=0
    )
    assert torch.equal(layout.flatten(list(selected.values())), flat)
    pieces = layout.unflatten(flat)
    assert all(torch.equal(pieces[n], selected[n]) for n in selected)
    assert pieces["0.bias"].data_ptr() == flat[18:].data_ptr()  # views, no copies
    assert torch.equal(layout.flatten([None, selected["0.bias"], None])[:18], torch.zeros(18, dtype=DTYPE))
    with pytest.raises(ValueError, match="`flat`"):
        layout.unflatten(flat[:-1])
    with pytest.raises(ValueError, match="`tensors`"):
        layout.flatten({"0.weight": selected["0.weight"]})
    with pytest.raises(ValueError, match="`params`.*dtype"):
        ParameterLayout.from_tensors({"a": torch.zeros(2), "b": torch.zeros(2, dtype=DTYPE)})


@pytest.mark.parametrize(
    "call, error, argument",
    [
        (
            lambda m, b: HessianOperator(m, squared_error, b, method="finite_differences"),
            ValueError,
            "`method`",
        ),
        (
            lambda m, b: HessianOperator(m, squared_error, b, params=["nothing.*"]),
            ValueError,
            "`params`.*nothing",
        ),
        (lambda m, b: HessianOperator(m, squared_error, b, params=[]), TypeError, "`params`"),
        (lambda m, b: HessianOperator(m, squared_error, b, params=[3]), TypeError, "`params`"),
        (lambda m, b: HessianOperator(m.requires_grad_(False), squared_error, b), ValueError, "`params`"),
        (lambda m, b: HessianOperator("model", squared_error, b), TypeError, "`model`"),
        (lambda m, b: HessianOperator(m, "mse", b), TypeError, "`loss_fn`"),
        (lambda m, b: HessianOperator(m, squared_error, b, reduce_fn=3), TypeError, "`reduce_fn`"),
        (
            lambda m, b: HessianOperator(m, squared_error, b).matvec(torch.ones(3, dtype=DTYPE)),
            ValueError,
            "`v`",
        ),
        (
            lambda m, b: HessianOperator(m, squared_error, b).matvec(torch.ones(44)),
            ValueError,
            "`v`.*float64",
        ),
        (
            lambda m, b: HessianOperator(m, lambda n, x: n(x[0]), b).matvec(torch.ones(44, dtype=DTYPE)),
            ValueError,
            "`loss_fn`",
        ),
        (
            lambda m, b: HessianOperator(m, lambda n, x: 1.0, b).matvec(torch.ones(44, dtype=DTYPE)),
            TypeError,
            "`loss_fn`",
        ),
        (
            lambda m, b: HessianOperator(nn.ModuleList([m, nn.Linear(2, 2)]), squared_error, b),
            ValueError,
            "dtype",
        ),
    ],
)
def test_validation(call, error, argument):
    with pytest.raises(error, match=argument):
        call(mlp(), regression_batch())


def test_every_method_name_is_accepted():
    model, batch = mlp(), regression_batch()
    for method in HVP_METHODS:
        assert HessianOperator(model, squared_error, batch, method=method).method == method


# ------------------------------------------------------------------------------------------- single batches
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
    with pytest.raises(ValueError, match=r"`batch` must be an int in \[0, 2\]"):
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
