"""The NTK trace from output-space probes ``E‖Jᵀu‖²`` (one backward pass per probe, the method that runs through
FSDP2 without gathering): each sample equals ``‖Jᵀu‖²`` of the explicit Jacobian with the same probe (1e-10
relative, float64), the estimate is unbiased (within 3 standard errors of the exact trace over many probes), and
the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from spectral_testing.references import explicit_jacobian
from torch import nn

from lightning_spectral.functional.ntk.output_probes import output_probe_trace
from lightning_spectral.functional.ntk.trace import ntk_trace
from lightning_spectral.linalg import mean_and_std_error, rademacher


def model_and_inputs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def test_each_sample_is_the_squared_norm_of_j_transpose_u_for_the_same_probe():
    model, inputs = model_and_inputs()
    jacobian = explicit_jacobian(model, inputs)  # (B·K, P)
    generator = torch.Generator().manual_seed(5)
    samples = [
        float(
            (jacobian.T @ rademacher((10, 3), dtype=torch.float64, generator=generator).reshape(-1))
            .square()
            .sum()
        )
        for _ in range(4)
    ]
    expected, expected_error = mean_and_std_error(torch.tensor(samples, dtype=torch.float64))
    result = output_probe_trace(model, inputs, num_probes=4, generator=torch.Generator().manual_seed(5))
    assert result.trace == pytest.approx(expected, rel=1e-10)
    assert result.std_error == pytest.approx(expected_error, rel=1e-8)
    assert (result.method_used, result.num_examples, result.num_outputs) == ("output_probes", 10, 3)
    scaled = output_probe_trace(model, inputs, num_probes=4, generator=torch.Generator().manual_seed(5),
                                gradient_scale=2.0)  # fmt: skip
    assert scaled.trace == pytest.approx(4 * expected, rel=1e-10)


def test_the_estimate_is_unbiased_and_ntk_trace_offers_it():
    model, inputs = model_and_inputs()
    exact = ntk_trace(model, inputs, method="exact").trace
    assert exact == pytest.approx(float(explicit_jacobian(model, inputs).square().sum()), rel=1e-10)
    result = ntk_trace(model, inputs, method="output_probes", num_probes=400,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert result.method_used == "output_probes"
    assert abs(result.trace - exact) < 3 * result.std_error
    assert result.std_error < 0.1 * exact  # the test can fail: an estimate off by more than ~30 % would


def test_the_model_is_left_as_it_was_and_bad_arguments_are_refused():
    model, inputs = model_and_inputs()
    grad = torch.ones_like(model[0].weight)
    model[0].weight.grad = grad
    before = [p.detach().clone() for p in model.parameters()]
    output_probe_trace(model, inputs, num_probes=2, generator=torch.Generator().manual_seed(0))
    assert model[0].weight.grad is grad and model[2].weight.grad is None
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    with pytest.raises(ValueError, match="gradient_scale"):
        output_probe_trace(model, inputs, gradient_scale=0.0)
    with pytest.raises(ValueError, match="num_probes"):
        output_probe_trace(model, inputs, num_probes=0)
    dropout = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5)).double()
    with pytest.raises(ValueError, match="eval"):
        output_probe_trace(dropout, inputs)
