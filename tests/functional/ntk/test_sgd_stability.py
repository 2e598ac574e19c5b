"""sgd_stability: the formula on hand-computed inputs, the second-moment map it is derived from, simulated
SGD on a high-dimensional linear model on both sides of 𝒦 = 1, and the loss normalisation (loss_scale)
against torch.optim.SGD with torch.nn.MSELoss.

The stochastic edge of stability under SGD's coupled ``weight_decay`` (sgd_stability, *Coupled weight decay*):
against torch.optim.SGD's own response to a gradient kick, the spectral radius of the second-moment map, SGD
simulated by torch.optim.SGD in parameter space, and the bounds from the trace.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_spectral.functional.hessian.edge_of_stability import stability_limit
from lightning_spectral.functional.ntk.sgd_stability import SGDStability, sgd_stability

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


def whole_set_stability(eigenvalues, dataset, lr, batch, **kwargs) -> SGDStability:
    """``sgd_stability`` of the NTK of the whole training set (``n = D`` examples)."""
    return sgd_stability(
        lr=lr,
        batch_size=batch,
        ntk_num_examples=dataset,
        dataset_size=dataset,
        ntk_eigenvalues=eigenvalues,
        **kwargs,
    )


def edge_learning_rate(kappa, high: float) -> float:
    """The step size in ``(0, high)`` where ``kappa(lr) = 1``, by bisection (``kappa(high) > 1`` asserted)."""
    low = 1e-6
    assert kappa(high) > 1  # the S-EOS comes before the mean's edge here
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if kappa(mid) < 1 else (low, mid)
    return 0.5 * (low + high)


def test_edge_is_where_the_second_moment_map_has_spectral_radius_one():
    g = torch.Generator().manual_seed(1)
    dataset, batch = 60, 3
    lam = torch.rand(dataset, dtype=DTYPE, generator=g) ** 4 * 100  # raw NTK eigenvalues, D examples, K = 1
    lam_hat = lam / dataset

    edge = edge_learning_rate(
        lambda lr: whole_set_stability(lam, dataset, lr, batch).noise_kernel_norm,
        1.999 / lam_hat.max().item(),
    )

    def radius(lr):
        return torch.linalg.eigvals(_second_moment_map(lam_hat, lr, batch / dataset)).abs().max().item()

    assert radius(edge) == pytest.approx(1.0, abs=1e-9)
    assert radius(0.9 * edge) < 1 < radius(1.1 * edge)


def gaussian_features_gram(dataset: int = 200, width: int = 600) -> torch.Tensor:
    """``X Xᵀ`` of a linear model with Gaussian features (eigenvectors of Θ delocalised, the paper's setting)."""
    torch.manual_seed(0)
    x = torch.randn(dataset, width, dtype=DTYPE) / math.sqrt(width)
    return x @ x.T


def simulated_growth_rate(
    gram, lr, batch, num_outputs=1, momentum=0.0, nesterov=False, runs=48, steps=800, window=300
) -> float:
    """Mean log growth per step of the mean-square residual of SGD in residual space, averaged over ``runs``
    runs and the last ``window`` of ``steps`` steps: ``g = (1/B)ΘP_S z``, buffer ``u ← μu + g``,
    ``z ← z − ηu`` (Nesterov ``z ← z − η(g + μu)``; without momentum ``z ← z − ηg``), batches of fixed size B
    drawn without replacement. The state is rescaled every step (the recursion is linear)."""
    dataset = gram.shape[0]
    z = torch.randn(runs, dataset, num_outputs, dtype=DTYPE)
    u = torch.zeros_like(z)
    log_scale = 0.0
    for step in range(steps):
        chosen = torch.rand(runs, dataset).argsort(dim=1)[:, :batch]
        mask = torch.zeros(runs, dataset, 1, dtype=DTYPE).scatter_(1, chosen[..., None], 1.0)
        gradient = torch.einsum("ij,rjk->rik", gram, mask * z) / batch
        u = momentum * u + gradient
        z = z - lr * (gradient + momentum * u if nesterov else u)
        mean_square = z.pow(2).sum(dim=(1, 2)).mean()
        z, u = z / mean_square.sqrt(), u / mean_square.sqrt()
        log_scale += math.log(mean_square.item())
        if step == steps - window - 1:
            start = log_scale
    return (log_scale - start) / window


@pytest.mark.parametrize("num_outputs", [1, 2])
def test_simulated_sgd_diverges_exactly_beyond_the_edge(num_outputs):
    """SGD on a linear model with Gaussian features (eigenvectors of Θ delocalised, the paper's setting):
    the mean-square residual decays when 𝒦 ≈ 0.87 and grows when 𝒦 ≈ 1.17, with ηλ̂_max = 1 (GD-stable).

    The residual update of SGD on (1/(2B)) Σ_{i∈S} ‖f(x_i) − y_i‖² for f(x) = W x is exactly
    z ← z − (η/B) Θ P_S z, with Θ = (X Xᵀ) ⊗ I_K and P_S the indicator of the batch (fixed size B, drawn
    without replacement). Rates are averaged over 48 runs and the last 300 of 800 steps.
    """
    gram = gaussian_features_gram()
    dataset = gram.shape[0]
    eigenvalues = torch.linalg.eigvalsh(gram).repeat(num_outputs)  # spectrum of (X Xᵀ) ⊗ I_K
    lr = dataset / torch.linalg.eigvalsh(gram).max().item()  # η λ̂_max = 1

    def kappa(batch):
        return whole_set_stability(eigenvalues, dataset, lr, batch, num_outputs=num_outputs)

    stable_batch, unstable_batch = 50, 40
    stable, unstable = kappa(stable_batch), kappa(unstable_batch)
    assert stable.noise_kernel_norm == pytest.approx(0.87, abs=0.01) and stable.stable is True
    assert unstable.noise_kernel_norm == pytest.approx(1.17, abs=0.01) and unstable.stable is False
    assert stable.edge_of_stability_ratio == pytest.approx(0.5)
    # Measured rates: about -0.077 and +0.125 per step (run-to-run noise ~0.003).
    assert simulated_growth_rate(gram, lr, stable_batch, num_outputs) < -0.03
    assert simulated_growth_rate(gram, lr, unstable_batch, num_outputs) > 0.05


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


MOMENTUM_VARIANTS = [
    {"momentum": 0.5},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.5, "nesterov": True},
    {"momentum": 0.9, "nesterov": True},
]
VARIANT_IDS = ["heavy-ball-0.5", "heavy-ball-0.9", "dampened", "nesterov-0.5", "nesterov-0.9"]


def _kick_response(lam: float, lr: float, steps: int = 4000, **variant) -> float:
    """``Σ_t θ_t²`` after one unit kick to the gradient of ``½λθ²`` (θ starting at 0), taken by
    ``torch.optim.SGD`` itself: the residual variance a unit noise sample leaves behind (its buffer is
    created by a step with zero gradient first, so that dampening applies to the kick as to every later one)."""
    theta = nn.Parameter(torch.zeros(1, dtype=DTYPE))
    optimizer = torch.optim.SGD([theta], lr=lr, **variant)
    total = 0.0
    for step in range(steps):
        optimizer.zero_grad()
        (0.5 * lam * theta**2).sum().backward()
        if step == 1:
            theta.grad += 1.0
        optimizer.step()
        total += theta.item() ** 2
    return total


@pytest.mark.parametrize("variant", MOMENTUM_VARIANTS, ids=VARIANT_IDS)
def test_momentum_noise_response_is_torch_sgds_kick_response(variant):
    """One example, one output, D ≫ B = 1: 𝒦 = λ² p with p the summed squared response of torch's SGD to a
    unit gradient kick, at a small, a middle and a near-edge curvature."""
    lr = 0.1
    limit = stability_limit(lr, **variant)
    for fraction in (0.05, 0.5, 0.9):
        lam = fraction * limit
        s = sgd_stability(
            lr=lr,
            batch_size=1,
            ntk_num_examples=1,
            ntk_eigenvalues=torch.tensor([lam], dtype=DTYPE),
            **variant,
        )
        assert s.noise_kernel_norm == pytest.approx(lam**2 * _kick_response(lam, lr, **variant), rel=1e-9)
        assert s.edge_of_stability_ratio == pytest.approx(fraction, rel=1e-12)


def _momentum_second_moment_map(
    lam_hat: torch.Tensor, eta: float, beta: float, weight_decay: float = 0.0, **variant
) -> torch.Tensor:
    """The linear map of the per-mode second moments (E z², E zu, E u²) of SGD with momentum (module
    docstring, *Momentum*), written out from the residual update; coupled weight decay ``ŵ`` adds to the
    curvature each mode's mean sees, not to its noise (*Coupled weight decay*)."""
    mu, nesterov, d = variant["momentum"], variant.get("nesterov", False), variant.get("dampening", 0.0)
    blocks, kicks = [], []
    for lam in lam_hat.tolist():
        x = lam + weight_decay
        if nesterov:
            a = torch.tensor([[1 - eta * (1 + mu) * x, -eta * mu**2], [x, mu]], dtype=DTYPE)
            e = torch.tensor([-eta * (1 + mu), 1.0], dtype=DTYPE)
        else:
            a = torch.tensor([[1 - eta * (1 - d) * x, -eta * mu], [(1 - d) * x, mu]], dtype=DTYPE)
            e = torch.tensor([-eta * (1 - d), 1 - d], dtype=DTYPE)
        # vec of the symmetric S as (p, q, r): S ↦ A S Aᵀ
        (a11, a12), (a21, a22) = a.tolist()
        blocks.append(
            torch.tensor(
                [
                    [a11 * a11, 2 * a11 * a12, a12 * a12],
                    [a11 * a21, a11 * a22 + a12 * a21, a12 * a22],
                    [a21 * a21, 2 * a21 * a22, a22 * a22],
                ],
                dtype=DTYPE,
            )
        )
        kicks.append(
            (1 / beta - 1) / lam_hat.numel() * lam**2 * torch.stack([e[0] ** 2, e[0] * e[1], e[1] ** 2])
        )
    reads_zz = torch.zeros(3 * lam_hat.numel(), dtype=DTYPE)
    reads_zz[0::3] = 1.0
    return torch.block_diag(*blocks) + torch.outer(torch.cat(kicks), reads_zz)


@pytest.mark.parametrize("variant", MOMENTUM_VARIANTS, ids=VARIANT_IDS)
def test_momentum_edge_is_where_the_second_moment_map_has_spectral_radius_one(variant):
    g = torch.Generator().manual_seed(1)
    dataset, batch = 40, 3
    lam = torch.rand(dataset, dtype=DTYPE, generator=g) ** 4 * 100
    lam_hat = lam / dataset
    mean_limit = (
        stability_limit(1.0, **variant) / lam_hat.max().item()
    )  # the lr at which the mean reaches its edge

    edge = edge_learning_rate(
        lambda lr: whole_set_stability(lam, dataset, lr, batch, **variant).noise_kernel_norm,
        0.9999 * mean_limit,
    )

    def radius(lr):
        return (
            torch.linalg.eigvals(_momentum_second_moment_map(lam_hat, lr, batch / dataset, **variant))
            .abs()
            .max()
        )

    assert radius(edge).item() == pytest.approx(1.0, abs=1e-8)
    assert radius(0.97 * edge) < 1 < radius(1.03 * edge)


@pytest.mark.parametrize("variant", MOMENTUM_VARIANTS, ids=VARIANT_IDS)
def test_momentum_bounds_contain_the_exact_value(variant):
    """Also under Nesterov, whose g(λ) = λp(λ) dips below g(0): spectra spread over the whole stable range."""
    g = torch.Generator().manual_seed(2)
    lr = 0.05
    limit = stability_limit(lr, **variant)
    kwargs = dict(lr=lr, batch_size=2, ntk_num_examples=4, num_outputs=3, dataset_size=50, **variant)
    for _ in range(20):
        eigenvalues = torch.rand(12, dtype=DTYPE, generator=g) * 0.95 * limit * 4  # Θ̂ = Θ/4 below the limit
        exact = sgd_stability(**kwargs, ntk_eigenvalues=eigenvalues)
        bounds = sgd_stability(**kwargs, ntk_trace=eigenvalues.sum(), ntk_lambda_max=eigenvalues.max().item())
        trace_only = sgd_stability(**kwargs, ntk_trace=eigenvalues.sum())
        assert bounds.noise_kernel_norm_lower <= exact.noise_kernel_norm * (1 + 1e-12)
        assert exact.noise_kernel_norm <= bounds.noise_kernel_norm_upper * (1 + 1e-12)
        assert trace_only.noise_kernel_norm_lower <= bounds.noise_kernel_norm_lower * (
            1 + 1e-9
        )  # solve rounding
    # small steps: every variant's lower bound is the effective-step formula (1 − B/D) η_eff tr(Θ̂)/(2BK)
    step = lr * (1 - variant.get("dampening", 0.0))
    eta_eff = step / (1 - variant["momentum"])
    if not variant.get("nesterov"):
        tiny = sgd_stability(**kwargs, ntk_trace=8.0, ntk_lambda_max=1e-6)
        assert tiny.noise_kernel_norm_lower == pytest.approx((1 - 2 / 50) * eta_eff * (8.0 / 4) / (2 * 2 * 3))


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant, lr_factor, stable_batch, unstable_batch",
    [({"momentum": 0.5}, 1.0, 80, 60), ({"momentum": 0.9, "nesterov": True}, 0.5, 80, 60)],
    ids=["heavy-ball", "nesterov"],
)
def test_simulated_momentum_sgd_diverges_beyond_the_edge(variant, lr_factor, stable_batch, unstable_batch):
    """Momentum SGD on the linear model of test_simulated_sgd_diverges_exactly_beyond_the_edge, the buffer in
    residual space (``u ← μu + (1/B)ΘPz``, ``z ← z − ηu``; Nesterov ``z ← z − η((1/B)ΘPz + μu)``): the mean-square
    residual decays at the stable batch size and grows at the unstable one."""
    gram = gaussian_features_gram()
    dataset = gram.shape[0]
    eigenvalues = torch.linalg.eigvalsh(gram)
    lr = lr_factor * dataset / eigenvalues.max().item()  # η λ̂_max ≤ 1, below every variant's mean limit

    def kappa(batch):
        return whole_set_stability(eigenvalues, dataset, lr, batch, **variant)

    stable, unstable = kappa(stable_batch), kappa(unstable_batch)
    assert stable.noise_kernel_norm < 0.85 and stable.stable is True  # 0.76, 0.81
    assert unstable.noise_kernel_norm > 1.15 and unstable.stable is False  # 1.19, 1.26
    assert simulated_growth_rate(gram, lr, stable_batch, **variant) < -0.01
    assert simulated_growth_rate(gram, lr, unstable_batch, **variant) > 0.01


def test_nesterov_lower_bound_is_the_dip_of_its_gain():
    """Under Nesterov (μ = 0.9) ``g(λ) = 𝒦/λ`` of a single eigenvalue dips to 0.47 of its small-step value
    ``η_eff/2``: the trace-only lower bound is that minimum, found here by brute force over the stable range."""
    lr, mu = 0.1, 0.9
    limit = stability_limit(lr, mu, nesterov=True)
    lams = torch.linspace(1e-6, 0.999 * limit, 20001, dtype=DTYPE)
    gains = [
        sgd_stability(
            lr=lr, batch_size=1, ntk_num_examples=1, ntk_eigenvalues=lam[None], momentum=mu, nesterov=True
        ).noise_kernel_norm
        / lam.item()
        for lam in lams
    ]
    lower = sgd_stability(lr=lr, batch_size=1, ntk_num_examples=1, ntk_trace=1.0, momentum=mu, nesterov=True)
    assert lower.noise_kernel_norm_lower == pytest.approx(min(gains), rel=1e-6)
    assert lower.noise_kernel_norm_lower / (lr / (1 - mu) / 2) == pytest.approx(0.47, abs=0.005)


# --------------------------------------------------------------------------------------------- weight decay
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


@pytest.mark.slow
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
