"""batch_sharpness against the formula E_B[g_Bᵀ H_B g_B / ‖g_B‖²] with dense per-batch Hessians (float64)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from spectral_testing.problems import DTYPE, cnn_with_batchnorm, cross_entropy, mlp, squared_error, torch_mse
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional.hessian.batch_sharpness import batch_sharpness


def regression_batches(num: int = 5, n: int = 4):
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(n, 4, generator=g, dtype=DTYPE), torch.randn(n, 2, generator=g, dtype=DTYPE))
        for _ in range(num)
    ]


def image_batches(num: int = 3, n: int = 6):
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(n, 1, 5, 5, generator=g, dtype=DTYPE), torch.randint(0, 3, (n,), generator=g))
        for _ in range(num)
    ]


def reference_terms(model, loss_fn, batch):
    """``(g_Bᵀ H_B g_B, ‖g_B‖², H_B)`` on a copy of the model (train-mode BatchNorm writes its statistics)."""
    model = copy.deepcopy(model)
    H = dense_hessian(model, loss_fn, batch)
    params = [p for p in model.parameters() if p.requires_grad]
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss_fn(model, batch), params)])
    return float(g @ H @ g), float(g @ g), H


CASES = {
    "mlp_squared_error": (mlp, squared_error, regression_batches),
    "mlp_torch_mse": (mlp, torch_mse, regression_batches),  # "auto" falls back to double backward
    "cnn_batchnorm_train": (lambda: cnn_with_batchnorm().train(), cross_entropy, image_batches),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("hvp_method", ["auto", "double_backward"])
def test_equals_the_mean_of_dense_rayleigh_quotients(case, hvp_method):
    make_model, loss_fn, make_batches = CASES[case]
    model, batches = make_model(), make_batches()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    result = batch_sharpness(model, loss_fn, batches, hvp_method=hvp_method)
    terms = [reference_terms(model, loss_fn, b) for b in batches]
    expected = [curvature / norm for curvature, norm, _ in terms]
    assert result.per_batch == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert result.value == pytest.approx(sum(expected) / len(expected), rel=1e-10)
    n = len(expected)
    spread = math.sqrt(sum((q - result.value) ** 2 for q in expected) / (n - 1))
    assert result.std_error == pytest.approx(spread / math.sqrt(n), rel=1e-10)
    assert result.num_hvps == n
    for quotient, (_, _, H) in zip(result.per_batch, terms):  # a Rayleigh quotient of H_B
        eigenvalues = torch.linalg.eigvalsh(H)
        assert eigenvalues[0] - 1e-12 <= quotient <= eigenvalues[-1] + 1e-12
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())


def test_the_expectation_is_outside_the_ratio():
    """Definition 3 averages the quotients; the ratio of averages is a different number here."""
    model, batches = mlp(), regression_batches()
    terms = [reference_terms(model, squared_error, b) for b in batches]
    mean_of_ratios = sum(c / s for c, s, _ in terms) / len(terms)
    ratio_of_means = sum(c for c, _, _ in terms) / sum(s for _, s, _ in terms)
    assert abs(mean_of_ratios - ratio_of_means) > 1e-3 * abs(mean_of_ratios)
    assert batch_sharpness(model, squared_error, batches).value == pytest.approx(mean_of_ratios, rel=1e-10)


def test_quadratic_losses_with_known_curvature():
    """L_B(θ) = ½ θᵀ A_B θ with θ an eigenvector of A_B: g_B = A_B θ = λ_B θ, so the quotient is λ_B."""
    eigenvalues = [torch.tensor([4.0, 1.0, 0.5]), torch.tensor([2.0, 3.0, -1.0])]
    model = nn.Linear(3, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))

    def quadratic(net, matrix):
        theta = net.weight.reshape(-1)
        return 0.5 * theta @ matrix @ theta

    batches = [torch.diag(e).to(DTYPE) for e in eigenvalues]
    result = batch_sharpness(model, quadratic, batches)
    assert result.per_batch == pytest.approx([4.0, 2.0], abs=1e-12)
    assert result.value == pytest.approx(3.0, abs=1e-12) and result.std_error == pytest.approx(1.0, abs=1e-12)


def test_auto_is_resolved_once_and_reused():
    model, batches = mlp(), regression_batches(num=4)
    calls = []

    def counting_mse(net, batch):
        calls.append(1)
        return torch_mse(net, batch)

    batch_sharpness(model, counting_mse, batches, hvp_method="auto")
    # First batch: gradient, failed forward-over-reverse attempt, gradient graph; then one graph per batch.
    assert len(calls) == 3 + (len(batches) - 1)
    calls.clear()
    batch_sharpness(model, counting_mse, batches)  # default double backward: the graph gives the gradient too
    assert len(calls) == len(batches)


def test_zero_gradients_are_left_out():
    model = nn.Linear(2, 1, bias=False).to(DTYPE)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))

    def loss(net, batch):  # minimum at θ = batch: zero gradient there
        return ((net.weight.reshape(-1) - batch) ** 2).sum() * (1.0 + net.weight.sum() ** 2)

    at_minimum = torch.tensor([1.0, -1.0], dtype=DTYPE)
    elsewhere = torch.tensor([0.0, 0.5], dtype=DTYPE)
    result = batch_sharpness(model, loss, [at_minimum, elsewhere])
    assert math.isnan(result.per_batch[0]) and not math.isnan(result.per_batch[1])
    assert result.value == result.per_batch[1] and math.isnan(result.std_error) and result.num_hvps == 1
    empty = batch_sharpness(model, loss, [at_minimum])
    assert math.isnan(empty.value) and empty.num_hvps == 0


def test_reduce_fn_reduces_gradients_and_products():
    """A reduce_fn scaling by 2 doubles g and H (so H g by 4): the quotient doubles."""
    model, batches = mlp(), regression_batches(num=3)
    plain = batch_sharpness(model, squared_error, batches)
    doubled = batch_sharpness(model, squared_error, batches, reduce_fn=lambda t: 2.0 * t)
    assert doubled.per_batch == pytest.approx([2.0 * q for q in plain.per_batch], rel=1e-12)


def test_frozen_parameters_are_excluded():
    model, batches = mlp(), regression_batches(num=2)
    model[0].weight.requires_grad_(False)
    result = batch_sharpness(model, squared_error, batches)
    expected = [c / s for c, s, _ in (reference_terms(model, squared_error, b) for b in batches)]
    assert result.per_batch == pytest.approx(expected, rel=1e-10)
    subset = batch_sharpness(model, squared_error, batches, params=["2.*"])
    model[0].bias.requires_grad_(False)
    expected = [c / s for c, s, _ in (reference_terms(model, squared_error, b) for b in batches)]
    assert subset.per_batch == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"batches": regression_batches(num=1)[0]}, TypeError, "`batches` must be a list"),
        ({"batches": []}, ValueError, "`batches`"),
        ({"hvp_method": "exact"}, ValueError, "`hvp_method`"),
        ({"params": ["nothing"]}, ValueError, "`params`"),
    ],
)
def test_validation(kwargs, error, match):
    arguments = {"batches": regression_batches(num=2), **kwargs}
    with pytest.raises(error, match=match):
        batch_sharpness(mlp(), squared_error, **arguments)
