"""The stochastic edge of stability under SGD's coupled ``weight_decay`` (sgd_stability, *Coupled weight decay*):
against torch.optim.SGD's own response to a gradient kick, the spectral radius of the second-moment map, SGD
simulated by torch.optim.SGD in parameter space, and the bounds from the trace."""

from __future__ import annotations

import math

import pytest
import torch
from test_ntk_sgd_stability import (
    DTYPE,
    _kick_response,
    _momentum_second_moment_map,
    edge_learning_rate,
    gaussian_features_gram,
    whole_set_stability,
)

from lightning_spectral.functional import sgd_stability, stability_limit

VARIANTS = [
    {},
    {"momentum": 0.5},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.9, "nesterov": True},
]
IDS = ["plain", "heavy-ball", "dampened", "nesterov"]


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_decayed_noise_response_is_torch_sgds_kick_response(variant):
    """One eigenvalue λ, D ≫ B = 1: 𝒦 = λ² p(λ + w) with p the summed squared response of torch.optim.SGD (with
    this ``weight_decay``) to a unit gradient kick on ½λθ²; the mean's ratio is λ over the limit less w."""
    lr = 0.1
    limit = stability_limit(lr, **variant)  # on the total curvature λ + w
    decay = 0.2 * limit
    for fraction in (0.05, 0.5, 0.9):
        lam = fraction * (limit - decay)
        s = sgd_stability(
            lr=lr,
            batch_size=1,
            ntk_num_examples=1,
            ntk_eigenvalues=torch.tensor([lam], dtype=DTYPE),
            weight_decay=decay,
            **variant,
        )
        response = _kick_response(lam, lr, weight_decay=decay, **variant)
        assert s.noise_kernel_norm == pytest.approx(lam**2 * response, rel=1e-9)
        assert s.edge_of_stability_ratio == pytest.approx(fraction, rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_decayed_edge_is_where_the_second_moment_map_has_spectral_radius_one(variant):
    g = torch.Generator().manual_seed(1)
    dataset, batch, decay = 40, 3, 0.4
    lam = torch.rand(dataset, dtype=DTYPE, generator=g) ** 4 * 100
    lam_hat = lam / dataset
    mean_limit = stability_limit(1.0, **variant) / (lam_hat.max().item() + decay)

    def kappa(lr):
        return whole_set_stability(lam, dataset, lr, batch, weight_decay=decay, **variant).noise_kernel_norm

    edge = edge_learning_rate(kappa, 0.9999 * mean_limit)
    momentum = {"momentum": 0.0, **variant}  # μ = 0: the buffer is the gradient, the map plain SGD's

    def radius(lr):
        matrix = _momentum_second_moment_map(lam_hat, lr, batch / dataset, weight_decay=decay, **momentum)
        return torch.linalg.eigvals(matrix).abs().max().item()

    assert radius(edge) == pytest.approx(1.0, abs=1e-8)
    assert radius(0.97 * edge) < 1 < radius(1.03 * edge)
    undecayed = edge_learning_rate(
        lambda lr: whole_set_stability(lam, dataset, lr, batch, **variant).noise_kernel_norm,
        0.9999 * stability_limit(1.0, **variant) / lam_hat.max().item(),
    )
    assert abs(edge / undecayed - 1) > 0.05  # the decay moves the edge


def parameter_space_growth_rate(
    x, lr, batch, weight_decay, runs=48, steps=800, window=300, **variant
) -> float:
    """Mean log growth per step of ``E‖Xθ‖²`` under torch.optim.SGD (with ``weight_decay`` and ``variant``) on
    ``(1/(2B)) Σ_{i∈S} (x_iᵀθ)²`` -- the linear model at an interpolating minimum, ``θ ∈ R^width`` with
    ``width > D``, so that the decay also acts on the directions the data do not see. Batches of fixed size B
    drawn without replacement, ``runs`` runs side by side (one row of θ each); θ and the momentum buffer are
    rescaled every step (the recursion is linear)."""
    dataset, width = x.shape
    theta = torch.nn.Parameter(torch.randn(runs, width, dtype=DTYPE))
    optimizer = torch.optim.SGD([theta], lr=lr, weight_decay=weight_decay, **variant)
    log_scale = 0.0
    for step in range(steps):
        chosen = torch.rand(runs, dataset).argsort(dim=1)[:, :batch]
        mask = torch.zeros(runs, dataset, dtype=DTYPE).scatter_(1, chosen, 1.0)
        residual = theta.detach() @ x.T  # (runs, D)
        theta.grad = (mask * residual) @ x / batch
        optimizer.step()
        with torch.no_grad():
            mean_square = (theta @ x.T).pow(2).sum(dim=1).mean()
            theta.div_(mean_square.sqrt())
            buffer = optimizer.state[theta].get("momentum_buffer")
            if buffer is not None:
                buffer.div_(mean_square.sqrt())
        log_scale += math.log(mean_square.item())
        if step == steps - window - 1:
            start = log_scale
    return (log_scale - start) / window


@pytest.mark.parametrize("variant", [{}, {"momentum": 0.5}], ids=["plain", "heavy-ball"])
def test_decay_stabilises_exactly_the_runs_it_is_predicted_to(variant):
    """SGD (torch.optim.SGD, in parameter space) on the linear model with Gaussian features: at the batch size B₁
    the undecayed 𝒦 is above 1 and the run grows, while with ``weight_decay = ŵ`` 𝒦 is below 1 and it decays;
    at the smaller B₂ 𝒦 stays above 1 with the decay and the run grows."""
    torch.manual_seed(0)
    x = torch.randn(200, 600, dtype=DTYPE) / math.sqrt(600)  # the features of gaussian_features_gram
    gram = gaussian_features_gram()
    assert torch.allclose(gram, x @ x.T)
    dataset = gram.shape[0]
    eigenvalues = torch.linalg.eigvalsh(gram)
    lr = 0.5 * dataset / eigenvalues.max().item() * (1 - variant.get("momentum", 0.0))
    decay = eigenvalues.mean().item() / dataset  # the mean eigenvalue of Θ̂

    def kappa(batch, weight_decay):
        stability = whole_set_stability(eigenvalues, dataset, lr, batch, weight_decay=weight_decay, **variant)
        return stability.noise_kernel_norm

    stabilised, unstable = (16, 8) if variant else (16, 10)
    # plain: 1.38 → 0.86 at B = 16, 1.43 at B = 10; heavy ball: 1.24 → 0.70 at B = 16, 1.46 at B = 8. Measured
    # rates (plain): +0.15, −0.13, +0.16 per step.
    assert kappa(stabilised, 0.0) > 1.2 and kappa(stabilised, decay) < 0.9
    assert kappa(unstable, decay) > 1.4
    torch.manual_seed(1)
    rates = [
        parameter_space_growth_rate(x, lr, batch, weight_decay, **variant)
        for batch, weight_decay in ((stabilised, 0.0), (stabilised, decay), (unstable, decay))
    ]
    assert rates[0] > 0.005 and rates[1] < -0.005 and rates[2] > 0.005


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_decayed_bounds_contain_the_exact_value(variant):
    """The Jensen lower bound and the λ̂_max upper bound (module docstring) around the exact 𝒦, for spectra
    spread over the stable range and decays from tiny to comparable with the eigenvalues; without λ_max the
    lower bound is still one."""
    g = torch.Generator().manual_seed(2)
    lr = 0.05
    curvature_limit = stability_limit(lr, **variant)
    kwargs = dict(lr=lr, batch_size=2, ntk_num_examples=4, num_outputs=3, dataset_size=50, **variant)
    for trial in range(30):
        decay = curvature_limit * (1e-4, 0.05, 0.3)[trial % 3]
        # Θ̂ = Θ/4 below the limit less the decay; twelve eigenvalues (n·K), some of them zero
        eigenvalues = torch.rand(12, dtype=DTYPE, generator=g) * 0.95 * (curvature_limit - decay) * 4
        eigenvalues[: trial % 4] = 0.0
        exact = sgd_stability(**kwargs, ntk_eigenvalues=eigenvalues, weight_decay=decay)
        bounds = sgd_stability(
            **kwargs,
            ntk_trace=eigenvalues.sum(),
            ntk_lambda_max=eigenvalues.max().item(),
            weight_decay=decay,
        )
        trace_only = sgd_stability(**kwargs, ntk_trace=eigenvalues.sum(), weight_decay=decay)
        assert bounds.noise_kernel_norm_lower <= exact.noise_kernel_norm * (1 + 1e-12)
        assert exact.noise_kernel_norm <= bounds.noise_kernel_norm_upper * (1 + 1e-12)
        assert trace_only.noise_kernel_norm_lower <= bounds.noise_kernel_norm_lower * (1 + 1e-9)
        assert bounds.noise_kernel_norm_lower > 0
    # equal eigenvalues: the Jensen bound is attained when g is flat (small steps)
    flat = torch.full((12,), 1e-4, dtype=DTYPE)
    exact = sgd_stability(**kwargs, ntk_eigenvalues=flat, weight_decay=1e-4)
    bounds = sgd_stability(**kwargs, ntk_trace=flat.sum(), ntk_lambda_max=1e-4, weight_decay=1e-4)
    assert bounds.noise_kernel_norm_lower == pytest.approx(exact.noise_kernel_norm, rel=1e-5)


def test_loss_scale_converts_the_decay_to_the_kernels_units():
    """With ``loss_scale = c`` the step on the normalised loss is ``ηc`` and the decay ``w/c``: the result equals
    that of ``loss_scale = 1`` with ``lr·c`` and ``weight_decay/c``."""
    eigenvalues = torch.tensor([3.0, 1.0, 0.5, 0.0], dtype=DTYPE)
    common = dict(batch_size=2, ntk_num_examples=2, num_outputs=2, ntk_eigenvalues=eigenvalues)
    scaled = sgd_stability(lr=0.2, loss_scale=0.5, weight_decay=0.3, **common)
    unscaled = sgd_stability(lr=0.1, weight_decay=0.6, **common)
    assert scaled.noise_kernel_norm == pytest.approx(unscaled.noise_kernel_norm, rel=1e-12)
    assert scaled.edge_of_stability_ratio == pytest.approx(unscaled.edge_of_stability_ratio, rel=1e-12)


@pytest.mark.parametrize("weight_decay", [-0.1, math.nan, "0.1", 20.0])
def test_bad_weight_decay_names_the_argument(weight_decay):
    """Negative, not finite, not a number, or so large that the decay alone is past the limit (2/η = 20)."""
    with pytest.raises(ValueError, match="`weight_decay`"):
        sgd_stability(lr=0.1, batch_size=1, ntk_num_examples=1, ntk_trace=1.0, weight_decay=weight_decay)
