"""ntk_trace against the explicit Jacobian (jacrev on the flat parameter vector), in float64.

Tolerances: the exact method agrees with ``‖J‖_F²`` to 1e-12 relative (same float64 arithmetic, different
order); the stochastic methods are checked statistically (unbiasedness within 3 standard errors of the mean
over seeds, and coverage of the reported standard error).
"""

from __future__ import annotations

import math

import pytest
import torch
from spectral_testing.problems import DTYPE, NTK_CASES, cnn_inputs, mlp_inputs, tiny_cnn, tiny_mlp
from spectral_testing.references import explicit_jacobian
from torch import nn

from lightning_spectral.functional.ntk.trace import AUTO_EXACT_MAX_ROWS, NTKTrace, ntk_trace

CASES = NTK_CASES


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3, 5, 64])
def test_exact_trace_equals_squared_frobenius_norm_of_explicit_jacobian(case, chunk_size):
    make_model, make_inputs = CASES[case]
    model, inputs = make_model(), make_inputs()
    reference = explicit_jacobian(model, inputs).pow(2).sum().item()
    result = ntk_trace(model, inputs, method="exact", chunk_size=chunk_size)
    assert result.method_used == "exact" and result.std_error == 0.0
    assert result.num_examples == inputs.shape[0]
    assert result.num_outputs == model(inputs).shape[1]
    assert result.trace == pytest.approx(reference, rel=1e-12)


class ScaledKeywordLinear(nn.Module):
    """A Linear layer called with ``input=`` (the per-example layer path hooks it) and a learnable 0-dim scale."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.scale = nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return torch.tanh(self.lin(input=x)) * self.scale


@pytest.mark.parametrize("method", ["exact", "hutchinson", "auto"])
def test_a_keyword_called_layer_and_a_scalar_parameter(method):
    """Both went through the per-example check (which crashed on a 0-dim gradient and on a keyword input)."""
    torch.manual_seed(0)
    model, inputs = ScaledKeywordLinear().double(), torch.randn(4, 3, dtype=torch.float64)
    reference = explicit_jacobian(model, inputs).pow(2).sum().item()
    result = ntk_trace(
        model, inputs, method=method, num_probes=64, generator=torch.Generator().manual_seed(0)
    )
    if method == "hutchinson":
        assert abs(result.trace - reference) <= 4 * result.std_error
    else:
        assert result.trace == pytest.approx(reference, rel=1e-12)


def test_output_fn_selects_and_flattens_the_output():
    model, inputs = tiny_cnn(), cnn_inputs()

    def feature_map(m, x):  # (B, 3, 4, 4): K = 48 outputs per example, only the conv and BN matter
        return m[2](m[1](m[0](x)))

    reference = explicit_jacobian(model, inputs, feature_map).pow(2).sum().item()
    result = ntk_trace(model, inputs, method="exact", output_fn=feature_map, chunk_size=2)
    assert result.num_outputs == 48
    assert result.trace == pytest.approx(reference, rel=1e-12)

    def last_two_logits(m, x):
        return m(x)[:, 1:] * 3.0

    mlp, x = tiny_mlp(), mlp_inputs()
    reference = explicit_jacobian(mlp, x, last_two_logits).pow(2).sum().item()
    result = ntk_trace(mlp, x, method="exact", output_fn=last_two_logits)
    assert result.num_outputs == 2
    assert result.trace == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize(
    "params, names",
    [
        ("2.weight", ["2.weight"]),
        (["*.bias"], ["0.bias", "2.bias"]),
        (["0"], ["0.weight", "0.bias"]),  # a module prefix selects its parameters
    ],
)
def test_params_subset(params, names):
    model, inputs = tiny_mlp(), mlp_inputs()
    reference = explicit_jacobian(model, inputs, names=names).pow(2).sum().item()
    assert ntk_trace(model, inputs, method="exact", params=params).trace == pytest.approx(
        reference, rel=1e-12
    )


def test_default_params_are_the_trainable_ones():
    model, inputs = tiny_mlp(), mlp_inputs()
    model[0].weight.requires_grad_(False)
    names = ["0.bias", "2.weight", "2.bias"]
    reference = explicit_jacobian(model, inputs, names=names).pow(2).sum().item()
    assert ntk_trace(model, inputs, method="exact").trace == pytest.approx(reference, rel=1e-12)


def _estimates(model, inputs, method, num_probes, seeds):
    return [
        ntk_trace(
            model, inputs, method=method, num_probes=num_probes, generator=torch.Generator().manual_seed(s)
        )
        for s in seeds
    ]


@pytest.mark.parametrize("method, num_probes", [("hutchinson", 4), ("hutchpp", 12)])
def test_stochastic_estimators_are_unbiased(method, num_probes):
    """Mean over 300 seeds within 3 standard errors (of that mean) of the exact trace."""
    model, inputs = tiny_mlp(), mlp_inputs(batch=16)  # B·K = 48 > num_probes: Hutch++ is not exact
    exact = ntk_trace(model, inputs, method="exact").trace
    values = torch.tensor([r.trace for r in _estimates(model, inputs, method, num_probes, range(300))])
    assert all(math.isfinite(v) for v in values.tolist())
    standard_error_of_mean = values.std().item() / math.sqrt(len(values))
    assert abs(values.mean().item() - exact) <= 3 * standard_error_of_mean
    assert values.std().item() > 1e-3 * exact  # the test is not vacuous: the estimates do vary


@pytest.mark.slow
@pytest.mark.parametrize("method, num_probes, lowest", [("hutchinson", 32, 0.90), ("hutchpp", 48, 0.85)])
def test_reported_standard_error_is_honest(method, num_probes, lowest):
    """Over 200 seeds: (1) the root-mean-square reported ``std_error`` matches the actual spread of the
    estimates within a factor 1.25 (an error off by √2 fails); (2) the nominal 95% interval
    ``est ± 1.96·se`` covers the exact trace in a fraction between ``lowest`` and 0.99.

    Binomial noise alone is ±1.5 points (one sd) at 200 seeds. Measured over 600 seeds: 0.94 (Hutchinson,
    32 probes) and 0.91 (Hutch++, 48 products = 16 sketch + 16 exact + 16 probes: its error is the
    conditional one given the sketch, from 16 skewed samples, hence the lower bound 0.85).
    """
    model, inputs = tiny_mlp(), mlp_inputs(batch=32)  # B·K = 96 > num_probes
    exact = ntk_trace(model, inputs, method="exact").trace
    results = _estimates(model, inputs, method, num_probes, range(1000, 1200))
    assert all(r.method_used == method and r.std_error > 0 for r in results)
    spread = torch.tensor([r.trace for r in results]).std().item()
    rms_error = math.sqrt(sum(r.std_error**2 for r in results) / len(results))
    assert 0.8 <= rms_error / spread <= 1.25
    covered = [abs(r.trace - exact) <= 1.96 * r.std_error for r in results]
    assert lowest <= sum(covered) / len(covered) <= 0.99


def test_auto_picks_exact_for_small_outputs_and_hutchinson_above_the_threshold():
    """Exact when B·K ≤ AUTO_EXACT_MAX_ROWS or K ≤ num_probes (K = 3 here), Hutchinson otherwise."""
    model = tiny_mlp()
    small = mlp_inputs(batch=AUTO_EXACT_MAX_ROWS // 3)
    result = ntk_trace(model, small, num_probes=2)
    assert result.method_used == "exact"
    assert result.trace == pytest.approx(explicit_jacobian(model, small).pow(2).sum().item(), rel=1e-12)
    large = mlp_inputs(batch=AUTO_EXACT_MAX_ROWS // 3 + 1)
    result = ntk_trace(model, large, num_probes=2, generator=torch.Generator().manual_seed(0))
    assert result.method_used == "hutchinson" and result.std_error > 0
    result = ntk_trace(model, large, num_probes=3)
    assert result.method_used == "exact"
    assert result.trace == pytest.approx(explicit_jacobian(model, large).pow(2).sum().item(), rel=1e-12)


def test_generator_makes_estimates_reproducible_and_leaves_global_rng_alone():
    model, inputs = tiny_mlp(), mlp_inputs(batch=16)
    state = torch.get_rng_state()
    first = ntk_trace(model, inputs, method="hutchinson", generator=torch.Generator().manual_seed(7))
    second = ntk_trace(model, inputs, method="hutchpp", generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), state)
    assert first == ntk_trace(model, inputs, method="hutchinson", generator=torch.Generator().manual_seed(7))
    assert second == ntk_trace(model, inputs, method="hutchpp", generator=torch.Generator().manual_seed(7))


def test_reduce_fn_sums_pieces_over_processes():
    """A fake two-process all-reduce: the result is the trace of the concatenated batch."""
    model, x1, x2 = tiny_cnn(), cnn_inputs(batch=3, seed=10), cnn_inputs(batch=4, seed=11)
    other = ntk_trace(model, x2, method="exact")
    seen = []

    def all_reduce_sum(pieces: torch.Tensor) -> torch.Tensor:
        seen.append(pieces.clone())
        return pieces + torch.tensor(
            [other.trace, other.std_error**2, other.num_examples], dtype=pieces.dtype
        )

    result = ntk_trace(model, x1, method="exact", reduce_fn=all_reduce_sum)
    assert seen[0].dtype == torch.float64 and seen[0].shape == (3,)
    assert result.num_examples == 7
    assert result.trace == pytest.approx(
        ntk_trace(model, torch.cat([x1, x2]), method="exact").trace, rel=1e-12
    )

    g = torch.Generator().manual_seed(3)
    local = ntk_trace(
        model, x1, method="hutchinson", num_probes=6, generator=torch.Generator().manual_seed(3)
    )
    combined = ntk_trace(model, x1, method="hutchinson", num_probes=6, generator=g, reduce_fn=all_reduce_sum)
    assert combined.trace == pytest.approx(local.trace + other.trace, rel=1e-12)
    assert combined.std_error == pytest.approx(math.hypot(local.std_error, other.std_error), rel=1e-12)


def test_float32_model():
    model, inputs = tiny_mlp(), mlp_inputs()
    reference = ntk_trace(model, inputs, method="exact").trace
    result = ntk_trace(model.float(), inputs.float(), method="exact")
    assert isinstance(result, NTKTrace)
    assert result.trace == pytest.approx(reference, rel=1e-5)


def _snapshot(model):
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "modes": {n: m.training for n, m in model.named_modules()},
    }


def _assert_same(before, after):
    assert before["requires_grad"] == after["requires_grad"] and before["modes"] == after["modes"]
    for kind in ("params", "buffers"):
        assert before[kind].keys() == after[kind].keys()
        assert all(torch.equal(before[kind][n], after[kind][n]) for n in before[kind])
    for n, grad in before["grads"].items():
        assert (grad is None and after["grads"][n] is None) or torch.equal(grad, after["grads"][n])


@pytest.mark.parametrize("method", ["exact", "hutchinson", "hutchpp"])
def test_model_state_is_untouched(method):
    model, inputs = tiny_cnn(), cnn_inputs()
    model[4].weight.grad = torch.ones_like(model[4].weight)  # an existing gradient must survive
    model[0].bias.requires_grad_(False)
    before = _snapshot(model)
    ntk_trace(model, inputs, method=method, num_probes=4, generator=torch.Generator().manual_seed(0))
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("module", [nn.BatchNorm1d(6), nn.Dropout(0.1)])
def test_train_mode_batchnorm_or_dropout_is_refused(module):
    model = nn.Sequential(nn.Linear(4, 6), module, nn.Linear(6, 2)).to(DTYPE).train()
    with pytest.raises(ValueError, match="model.eval"):
        ntk_trace(model, mlp_inputs(), method="exact")
    model.eval()
    assert ntk_trace(model, mlp_inputs(), method="exact").trace > 0


def test_batchnorm_without_running_statistics_is_refused_even_in_eval_mode():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False)).to(DTYPE).eval()
    with pytest.raises(ValueError, match="running statistics"):
        ntk_trace(model, mlp_inputs(), method="exact")


@pytest.mark.parametrize(
    "kwargs, error, argument",
    [
        ({"method": "lanczos"}, ValueError, "method"),
        ({"num_probes": 0}, ValueError, "num_probes"),
        ({"num_probes": 2.5}, ValueError, "num_probes"),
        ({"method": "hutchpp", "num_probes": 2}, ValueError, "num_probes"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"params": "nonexistent.*"}, ValueError, "params"),
        ({"output_fn": "logits"}, TypeError, "output_fn"),
        ({"output_fn": lambda m, x: m(x).sum()}, ValueError, "output_fn"),
        ({"reduce_fn": 3}, TypeError, "reduce_fn"),
    ],
)
def test_validation_names_the_argument(kwargs, error, argument):
    with pytest.raises(error, match=argument):
        ntk_trace(tiny_mlp(), mlp_inputs(), **kwargs)


def test_validation_of_inputs():
    with pytest.raises(TypeError, match="inputs"):
        ntk_trace(tiny_mlp(), [[0.0] * 4])
    with pytest.raises(ValueError, match="inputs"):
        ntk_trace(tiny_mlp(), torch.zeros(0, 4, dtype=DTYPE))
