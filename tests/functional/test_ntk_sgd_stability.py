"""sgd_stability: the formula on hand-computed inputs, the second-moment map it is derived from, simulated
SGD on a high-dimensional linear model on both sides of 𝒦 = 1, and the loss normalisation (loss_scale)
against torch.optim.SGD with torch.nn.MSELoss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_spectral.functional.sgd_stability import SGDStability, sgd_stability

DTYPE = torch.float64


def test_formula_on_hand_computed_inputs():
    # Θ of n = 2 examples, K = 2 outputs: eigenvalues 4, 2, 1, 0  →  Θ̂ = Θ/2: 2, 1, 0.5, 0.
    # η = 0.5: ηλ̂ = 1, 0.5, 0.25, 0; Σ x/(2−x) = 1 + 1/3 + 1/7 = 31/21; 𝒦 = (1/(B·K))·31/21 = 31/42.
    eigenvalues = torch.tensor([4.0, 2.0, 1.0, 0.0], dtype=DTYPE)
    s = sgd_stability(lr=0.5, batch_size=1, ntk_num_examples=2, num_outputs=2, ntk_eigenvalues=eigenvalues)
    assert s.noise_kernel_norm == pytest.approx(31 / 42, rel=1e-14)
    assert s.noise_kernel_norm_lower == pytest.approx(0.5 * 3.5 / 4, rel=1e-14)  # η tr(Θ̂)/(2BK)
    assert s.noise_kernel_norm_upper == pytest.approx(0.4375 * 2 / (2 - 1), rel=1e-14)
    assert s.edge_of_stability_ratio == pytest.approx(0.5, rel=1e-14)  # η λ̂_max / 2
    assert s.stable is True

    # Finite dataset: factor 1 − B/D = 3/4; zero eigenvalues may be left out; loss_scale multiplies lr.
    s = sgd_stability(
        lr=0.25,
        loss_scale=2.0,
        batch_size=1,
        ntk_num_examples=2,
        num_outputs=2,
        dataset_size=4,
        ntk_eigenvalues=eigenvalues[:3],
    )
    assert s.noise_kernel_norm == pytest.approx(0.75 * 31 / 42, rel=1e-14)
    assert s.noise_kernel_norm_lower == pytest.approx(0.75 * 0.4375, rel=1e-14)

    # Full batch (B = D): no noise.
    s = sgd_stability(
        lr=0.5, batch_size=4, ntk_num_examples=2, num_outputs=2, dataset_size=4, ntk_eigenvalues=eigenvalues
    )
    assert s.noise_kernel_norm == 0.0 and s.stable is True


def test_trace_and_lambda_max_give_bounds_only():
    s = sgd_stability(
        lr=0.5, batch_size=1, ntk_num_examples=2, num_outputs=2, ntk_trace=7.0, ntk_lambda_max=4.0
    )
    assert s.noise_kernel_norm is None
    assert (s.noise_kernel_norm_lower, s.noise_kernel_norm_upper) == pytest.approx((0.4375, 0.875), rel=1e-14)
    assert s.stable is True  # upper bound < 1
    straddle = sgd_stability(
        lr=0.5, batch_size=1, ntk_num_examples=2, num_outputs=1, ntk_trace=7.0, ntk_lambda_max=4.0
    )
    assert straddle.noise_kernel_norm_lower < 1 < straddle.noise_kernel_norm_upper and straddle.stable is None
    unstable = sgd_stability(lr=1.0, batch_size=1, ntk_num_examples=2, ntk_trace=7.0, ntk_lambda_max=4.0)
    assert unstable.edge_of_stability_ratio == 1.0 and unstable.noise_kernel_norm_upper == math.inf
    assert unstable.stable is False
    # Exact 𝒦 always lies between the bounds.
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        eigenvalues = torch.rand(12, dtype=DTYPE, generator=g) ** 3 * 10
        kwargs = dict(lr=0.3, batch_size=2, ntk_num_examples=4, num_outputs=3, dataset_size=50)
        exact = sgd_stability(**kwargs, ntk_eigenvalues=eigenvalues)
        assert exact.noise_kernel_norm_lower <= exact.noise_kernel_norm <= exact.noise_kernel_norm_upper
        bounds = sgd_stability(**kwargs, ntk_trace=eigenvalues.sum(), ntk_lambda_max=eigenvalues.max().item())
        assert bounds.noise_kernel_norm_lower == pytest.approx(exact.noise_kernel_norm_lower, rel=1e-12)
        assert bounds.noise_kernel_norm_upper == pytest.approx(exact.noise_kernel_norm_upper, rel=1e-12)


def _second_moment_map(lam_hat: torch.Tensor, eta: float, beta: float) -> torch.Tensor:
    """The linear map of the eigenbasis second moments m_α (module docstring), N = len(lam_hat)."""
    n = lam_hat.numel()
    return torch.diag((1 - eta * lam_hat) ** 2) + (eta**2 * (1 / beta - 1) / n) * torch.outer(
        lam_hat**2, torch.ones(n, dtype=DTYPE)
    )


def test_edge_is_where_the_second_moment_map_has_spectral_radius_one():
    g = torch.Generator().manual_seed(1)
    dataset, batch = 60, 3
    lam = torch.rand(dataset, dtype=DTYPE, generator=g) ** 4 * 100  # raw NTK eigenvalues, D examples, K = 1
    lam_hat = lam / dataset

    def kappa(lr):
        return sgd_stability(
            lr=lr, batch_size=batch, ntk_num_examples=dataset, dataset_size=dataset, ntk_eigenvalues=lam
        ).noise_kernel_norm

    low, high = 1e-6, 1.999 / lam_hat.max().item()
    assert kappa(high) > 1  # the S-EOS comes before the full-batch EOS here
    for _ in range(200):  # bisection for 𝒦(lr*) = 1
        mid = 0.5 * (low + high)
        low, high = (mid, high) if kappa(mid) < 1 else (low, mid)
    edge = 0.5 * (low + high)

    def radius(lr):
        return torch.linalg.eigvals(_second_moment_map(lam_hat, lr, batch / dataset)).abs().max().item()

    assert radius(edge) == pytest.approx(1.0, abs=1e-9)
    assert radius(0.9 * edge) < 1 < radius(1.1 * edge)


@pytest.mark.parametrize("num_outputs", [1, 2])
def test_simulated_sgd_diverges_exactly_beyond_the_edge(num_outputs):
    """SGD on a linear model with Gaussian features (eigenvectors of Θ delocalised, the paper's setting):
    the mean-square residual decays when 𝒦 ≈ 0.87 and grows when 𝒦 ≈ 1.17, with ηλ̂_max = 1 (GD-stable).

    The residual update of SGD on (1/(2B)) Σ_{i∈S} ‖f(x_i) − y_i‖² for f(x) = W x is exactly
    z ← z − (η/B) Θ P_S z, with Θ = (X Xᵀ) ⊗ I_K and P_S the indicator of the batch (fixed size B, drawn
    without replacement). Rates are averaged over 48 runs and the last 300 of 800 steps.
    """
    torch.manual_seed(0)
    dataset, width = 200, 600
    x = torch.randn(dataset, width, dtype=DTYPE) / math.sqrt(width)
    gram = x @ x.T
    eigenvalues = torch.linalg.eigvalsh(gram).repeat(num_outputs)  # spectrum of (X Xᵀ) ⊗ I_K
    lr = dataset / torch.linalg.eigvalsh(gram).max().item()  # η λ̂_max = 1

    def kappa(batch):
        return sgd_stability(
            lr=lr,
            batch_size=batch,
            ntk_num_examples=dataset,
            num_outputs=num_outputs,
            dataset_size=dataset,
            ntk_eigenvalues=eigenvalues,
        )

    def growth_rate(batch, runs=48, steps=800, window=300):
        z = torch.randn(runs, dataset, num_outputs, dtype=DTYPE)
        log_scale = 0.0
        for step in range(steps):
            chosen = torch.rand(runs, dataset).argsort(dim=1)[:, :batch]
            mask = torch.zeros(runs, dataset, 1, dtype=DTYPE).scatter_(1, chosen[..., None], 1.0)
            z = z - (lr / batch) * torch.einsum("ij,rjk->rik", gram, mask * z)
            mean_square = z.pow(2).sum(dim=(1, 2)).mean()
            z = z / mean_square.sqrt()
            log_scale += math.log(mean_square.item())
            if step == steps - window - 1:
                start = log_scale
        return (log_scale - start) / window

    stable_batch, unstable_batch = 50, 40
    stable, unstable = kappa(stable_batch), kappa(unstable_batch)
    assert stable.noise_kernel_norm == pytest.approx(0.87, abs=0.01) and stable.stable is True
    assert unstable.noise_kernel_norm == pytest.approx(1.17, abs=0.01) and unstable.stable is False
    assert stable.edge_of_stability_ratio == pytest.approx(0.5)
    # Measured rates: about -0.077 and +0.125 per step (run-to-run noise ~0.003).
    assert growth_rate(stable_batch) < -0.03
    assert growth_rate(unstable_batch) > 0.05


def test_loss_scale_matches_torch_sgd_with_mse_loss():
    """One torch.optim.SGD step on torch.nn.MSELoss() moves the residuals like the documented update
    z ← z − (η/B) Θ P z with η = lr · loss_scale, loss_scale = 2/K."""
    torch.manual_seed(0)
    batch, features, k = 5, 7, 3
    model = nn.Linear(features, k, bias=False).to(DTYPE)
    x, y = torch.randn(batch, features, dtype=DTYPE), torch.randn(batch, k, dtype=DTYPE)
    lr = 0.3
    z_before = (model(x) - y).detach()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()
    z_after = (model(x) - y).detach()
    theta = torch.kron(x @ x.T, torch.eye(k, dtype=DTYPE))  # NTK of f(x) = W x, example-major
    eta = lr * 2 / k
    expected = z_before.reshape(-1) - (eta / batch) * theta @ z_before.reshape(-1)
    assert torch.allclose(z_after.reshape(-1), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"loss_scale": -1.0}, "loss_scale"),
        ({"batch_size": 0}, "batch_size"),
        ({"ntk_num_examples": 0}, "ntk_num_examples"),
        ({"num_outputs": 0}, "num_outputs"),
        ({"dataset_size": 1, "batch_size": 2}, "dataset_size"),
        ({"ntk_trace": 1.0}, "ntk_eigenvalues"),  # both kinds given
        ({"ntk_eigenvalues": torch.tensor([1.0, -1.0])}, "ntk_eigenvalues"),
        ({"ntk_eigenvalues": torch.ones(5)}, "ntk_eigenvalues"),  # more than n·K = 4
        ({"ntk_eigenvalues": torch.ones(2, 2)}, "ntk_eigenvalues"),
    ],
)
def test_validation_names_the_argument(kwargs, argument):
    base = dict(lr=0.1, batch_size=1, ntk_num_examples=2, num_outputs=2, ntk_eigenvalues=torch.ones(4))
    base.update(kwargs)
    with pytest.raises(ValueError, match=argument):
        sgd_stability(**base)


def test_validation_of_the_trace_inputs():
    base = dict(lr=0.1, batch_size=1, ntk_num_examples=2)
    with pytest.raises(ValueError, match="ntk_lambda_max"):
        sgd_stability(**base, ntk_trace=1.0, ntk_lambda_max=-1.0)
    with pytest.raises(ValueError, match="ntk_trace"):
        sgd_stability(**base, ntk_trace=-1.0, ntk_lambda_max=1.0)
    with pytest.raises(ValueError, match="ntk_eigenvalues"):
        sgd_stability(**base)
    assert isinstance(sgd_stability(**base, ntk_trace=1.0, ntk_lambda_max=1.0), SGDStability)


def test_trace_alone_gives_the_lower_bound():
    """Without λ_max: 𝒦_lower = (1 − B/D)·η·tr(Θ)/n/(2BK) is known, the upper bound and the ratio are not."""
    s = sgd_stability(
        lr=0.1, batch_size=4, ntk_num_examples=8, num_outputs=2, ntk_trace=40.0, dataset_size=16
    )
    assert s.noise_kernel_norm_lower == pytest.approx((1 - 4 / 16) * 0.1 * (40.0 / 8) / (2 * 4 * 2))
    assert s.noise_kernel_norm is None and s.noise_kernel_norm_upper == float("inf")
    assert s.edge_of_stability_ratio != s.edge_of_stability_ratio  # nan
    assert s.stable is None
    unstable = sgd_stability(lr=100.0, batch_size=1, ntk_num_examples=1, ntk_trace=1.0)
    assert unstable.stable is False
