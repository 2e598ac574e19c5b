"""The preconditioners of Adam, RMSprop, Adamax, RAdam and Adagrad against their states recomputed from the
gradients, their stability limits against the torch optimizers themselves (with the second moment frozen), and
the preconditioned Hessian eigenvalues against the dense ``D⁻¹H`` (NAdam and Adadelta:
test_nadam_adadelta_preconditioners.py)."""

from __future__ import annotations

import math

import pytest
import torch
from spectral_testing.frozen_preconditioner import (
    BETA2,
    STEP,
    TwoLayerProblem,
    diverges_with_frozen_preconditioner,
    optimizer_steps,
)
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional import (
    adam_preconditioner,
    adam_stability_limit,
    adaptive_preconditioning,
    hessian_eigenvalues,
    rmsprop_preconditioner,
    stability_limit,
)


@pytest.mark.parametrize(
    "optimizer_class, kwargs",
    [
        (torch.optim.Adam, {}),
        (torch.optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-4}),
        (torch.optim.AdamW, {"weight_decay": 0.1}),
        (torch.optim.Adam, {"amsgrad": True}),
    ],
    ids=["adam", "adam-betas-eps", "adamw", "amsgrad"],
)
def test_preconditioner_from_the_moments_recomputed_from_the_gradients(optimizer_class, kwargs):
    params, optimizer, grads = optimizer_steps(optimizer_class, **kwargs)
    beta1, beta2 = kwargs.get("betas", (0.9, 0.999))
    eps = kwargs.get("eps", 1e-8)
    v = torch.zeros_like(grads[0])
    v_max = torch.zeros_like(grads[0])
    for g in grads:
        v = beta2 * v + (1 - beta2) * g**2
        v_max = torch.maximum(v_max, v)
    t = len(grads)
    second = v_max if kwargs.get("amsgrad") else v
    expected = (1 - beta1**t) * ((second / (1 - beta2**t)).sqrt() + eps)
    torch.testing.assert_close(adam_preconditioner(optimizer, params), expected, rtol=1e-12, atol=0)


def test_no_preconditioner_before_a_step_for_sgd_or_a_parameter_outside_the_optimizer():
    params, optimizer, _ = optimizer_steps(torch.optim.Adam, steps=0)
    assert adam_preconditioner(optimizer, params) is None
    params, optimizer, _ = optimizer_steps(torch.optim.Adam, steps=1)
    assert adam_preconditioner(optimizer, [*params, nn.Parameter(torch.ones(2))]) is None
    params, optimizer, _ = optimizer_steps(torch.optim.SGD, steps=1)
    assert adam_preconditioner(optimizer, params) is None


def test_param_groups_fold_their_step_sizes_in_and_different_beta1_has_no_preconditioner():
    """θ_g ← θ_g − η_g D_g⁻¹ m = θ_g − η_0 (η_0/η_g · D_g)⁻¹ m: entries scaled by η_0/η_g, +inf at η_g = 0."""
    problem = TwoLayerProblem()
    model, first, second = problem.model, problem.first, problem.second

    def stepped(groups):
        return problem.stepped(torch.optim.Adam(groups))

    optimizer = stepped([{"params": first, "lr": 0.01}, {"params": second, "lr": 0.001}])
    parameters = first + second
    d = adam_preconditioner(optimizer, parameters)
    sizes = [p.numel() for p in first], [p.numel() for p in second]

    def raw(state):  # (1 − β₁ᵗ)(√v̂ + ε) from the state, default betas and eps
        t = float(state["step"])
        return ((1 - 0.9**t) * ((state["exp_avg_sq"] / (1 - 0.999**t)).sqrt() + 1e-8)).reshape(-1)

    expected = torch.cat(
        [raw(optimizer.state[p]) * (0.01 / g["lr"]) for g in optimizer.param_groups for p in g["params"]]
    )
    torch.testing.assert_close(d, expected, rtol=1e-12, atol=0)
    frozen = stepped([{"params": first, "lr": 0.01}, {"params": second, "lr": 0.0}])
    d = adam_preconditioner(frozen, parameters)
    assert torch.isinf(d[sum(sizes[0]) :]).all() and torch.isfinite(d[: sum(sizes[0])]).all()
    # the frozen group drops out: D⁻¹H restricted to the first group
    batch = problem.batch
    H = dense_hessian(model, squared_error, batch)
    n = sum(sizes[0])
    exact = torch.linalg.eigvals(torch.diag(1 / d[:n]) @ H[:n, :n]).real.max()
    result = hessian_eigenvalues(model, squared_error, batch, tol=1e-10, preconditioner=d)
    torch.testing.assert_close(result.eigenvalues[0], exact, rtol=1e-8, atol=0)
    mixed = stepped([{"params": first, "betas": (0.9, 0.999)}, {"params": second, "betas": (0.5, 0.999)}])
    assert adam_preconditioner(mixed, parameters) is None


def _adam_diverges(curvature: float, lr: float, beta1: float, second_moment: float) -> bool:
    return diverges_with_frozen_preconditioner(
        torch.optim.Adam, curvature, second_moment, "exp_avg_sq", lr=lr, betas=(beta1, BETA2)
    )


@pytest.mark.parametrize("beta1", [0.0, 0.5, 0.9])
def test_limit_separates_stable_from_divergent_adam_with_a_frozen_preconditioner(beta1):
    """The preconditioned curvature ``a/D`` is stable below ``(2 + 2β₁)/((1 − β₁)η)`` (38/η at β₁ = 0.9)."""
    lr, second_moment = 0.1, 0.25
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))
    probe = torch.optim.Adam([theta], lr=lr, betas=(beta1, BETA2), eps=0.0)
    theta.grad = torch.ones(1, dtype=torch.float64)
    probe.step()
    probe.state[theta]["exp_avg_sq"].fill_(second_moment)
    probe.state[theta]["step"].fill_(STEP)
    d = float(adam_preconditioner(probe, [theta]))
    assert d == pytest.approx(math.sqrt(second_moment / (1 - BETA2**STEP)), rel=1e-12)
    limit = adam_stability_limit(lr, beta1)
    assert not _adam_diverges(0.99 * limit * d, lr, beta1, second_moment)
    assert _adam_diverges(1.01 * limit * d, lr, beta1, second_moment)


def test_limit_at_the_papers_setting_and_validation():
    assert adam_stability_limit(lr=1e-3, beta1=0.9) == pytest.approx(38_000.0)
    with pytest.raises(ValueError, match="lr"):
        adam_stability_limit(lr=0.0, beta1=0.9)
    with pytest.raises(ValueError, match="beta1"):
        adam_stability_limit(lr=0.1, beta1=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"centered": True}, {"momentum": 0.9, "alpha": 0.9, "eps": 1e-4}],
    ids=["plain", "centered", "momentum"],
)
def test_rmsprop_preconditioner_from_the_averages_recomputed_from_the_gradients(kwargs):
    params, optimizer, grads = optimizer_steps(torch.optim.RMSprop, **kwargs)
    alpha, eps = kwargs.get("alpha", 0.99), kwargs.get("eps", 1e-8)
    v, mean = torch.zeros_like(grads[0]), torch.zeros_like(grads[0])
    for g in grads:
        v = alpha * v + (1 - alpha) * g**2
        mean = alpha * mean + (1 - alpha) * g
    expected = (v - mean**2 if kwargs.get("centered") else v).sqrt() + eps
    torch.testing.assert_close(rmsprop_preconditioner(optimizer, params), expected, rtol=1e-12, atol=0)
    assert adam_preconditioner(optimizer, params) is None
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "RMSprop" and step.limit == stability_limit(0.01, kwargs.get("momentum", 0.0))


def test_dispatch_gives_each_optimizer_its_limit_and_nothing_for_sgd():
    params, optimizer, _ = optimizer_steps(torch.optim.Adam, betas=(0.8, 0.999))
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "Adam" and step.limit == pytest.approx((2 + 1.6) / (0.2 * 0.01))
    torch.testing.assert_close(step.diagonal, adam_preconditioner(optimizer, params), rtol=0, atol=0)
    params, optimizer, _ = optimizer_steps(torch.optim.SGD)
    assert adaptive_preconditioning(optimizer, params) is None
    params, optimizer, _ = optimizer_steps(torch.optim.RMSprop, steps=0)
    assert adaptive_preconditioning(optimizer, params) is None


def _rmsprop_diverges(curvature: float, lr: float, momentum: float, second_moment: float) -> bool:
    return diverges_with_frozen_preconditioner(
        torch.optim.RMSprop, curvature, second_moment, "square_avg", lr=lr, alpha=BETA2, momentum=momentum
    )


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_rmsprop_limit_separates_stable_from_divergent_with_a_frozen_preconditioner(momentum):
    lr, second_moment = 0.1, 0.25
    d = second_moment**0.5
    limit = stability_limit(lr, momentum)  # (2 + 2μ)/η on D⁻¹H
    assert not _rmsprop_diverges(0.99 * limit * d, lr, momentum, second_moment)
    assert _rmsprop_diverges(1.01 * limit * d, lr, momentum, second_moment)


def squared_error(net, batch):
    return ((net(batch[0]) - batch[1]) ** 2).mean()


def test_preconditioned_eigenvalues_are_those_of_the_dense_d_inverse_h():
    params, optimizer, _ = optimizer_steps(torch.optim.Adam)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        for target, source in zip(model.parameters(), params):
            target.copy_(source)
    g = torch.Generator().manual_seed(1)
    batch = (
        torch.randn(10, 3, generator=g, dtype=torch.float64),
        torch.randn(10, 1, generator=g, dtype=torch.float64),
    )
    d = adam_preconditioner(optimizer, params)
    H = dense_hessian(model, squared_error, batch)
    # D⁻¹H is not symmetric: its (real) eigenvalues from the general solver are an independent reference.
    exact = torch.linalg.eigvals(torch.diag(1 / d) @ H).real.sort(descending=True).values
    result = hessian_eigenvalues(
        model,
        squared_error,
        batch,
        k=3,
        tol=1e-10,
        preconditioner=d,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(result.eigenvalues, exact[:3], rtol=1e-8, atol=1e-10)
    # the eigenvectors are those of D^{-1/2} H D^{-1/2}: D^{-1/2} w is an eigenvector of D⁻¹H
    x = result.eigenvectors[:, 0] / d.sqrt()
    torch.testing.assert_close((H @ x) / d, result.eigenvalues[0] * x, rtol=1e-6, atol=1e-9)
    assert result.num_hvps >= 3


@pytest.mark.parametrize(
    "preconditioner, message",
    [(torch.ones(3), "shape"), (-torch.ones(21), "positive"), (torch.full((21,), float("nan")), "positive")],
    ids=["shape", "negative", "nan"],
)
def test_preconditioner_validation(preconditioner, message):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    batch = (torch.randn(5, 3), torch.randn(5, 1))
    with pytest.raises(ValueError, match=message):
        hessian_eigenvalues(model, squared_error, batch, preconditioner=preconditioner)


def test_adamax_and_radam_preconditioners_from_the_states_recomputed_from_the_gradients():
    """Adamax: ``(1 − β₁ᵗ)·u_t``, ``u_t = max(β₂u, |g| + ε)``. RAdam: ``(1 − β₁ᵗ)·I`` while ``ρ_t ≤ 5`` (3 steps),
    ``(1 − β₁ᵗ)/r_t·(√v̂ + ε/√(1 − β₂ᵗ))`` after (10 steps). Both with Adam's limit."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    params, optimizer, grads = optimizer_steps(torch.optim.Adamax, steps=5)
    u = torch.zeros_like(grads[0])
    for g in grads:
        u = torch.maximum(beta2 * u, g.abs() + eps)
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "Adamax" and step.limit == pytest.approx(adam_stability_limit(0.01, beta1))
    torch.testing.assert_close(step.diagonal, (1 - beta1**5) * u, rtol=1e-12, atol=0)

    params, optimizer, _ = optimizer_steps(torch.optim.RAdam, steps=3)
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "RAdam"
    torch.testing.assert_close(
        step.diagonal, torch.full_like(step.diagonal, 1 - beta1**3), rtol=1e-12, atol=0
    )
    params, optimizer, grads = optimizer_steps(torch.optim.RAdam, steps=10)
    v = torch.zeros_like(grads[0])
    for g in grads:
        v = beta2 * v + (1 - beta2) * g**2
    t = 10
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
    assert rho > 5
    r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    expected = (1 - beta1**t) / r * ((v / (1 - beta2**t)).sqrt() + eps / math.sqrt(1 - beta2**t))
    torch.testing.assert_close(
        adaptive_preconditioning(optimizer, params).diagonal, expected, rtol=1e-12, atol=0
    )


@pytest.mark.parametrize(
    "optimizer_class, key, scale",
    [(torch.optim.Adamax, "exp_inf", 1e-8), (torch.optim.RAdam, "exp_avg_sq", 1.0)],
)
@pytest.mark.parametrize("beta1", [0.0, 0.9])
def test_adamax_and_radam_limits_separate_stable_from_divergent_with_a_frozen_preconditioner(
    optimizer_class, key, scale, beta1
):
    """The preconditioned curvature ``a/D`` against Adam's limit, ``D`` read from the pinned state."""
    lr, pinned = 0.1, 0.25
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))
    probe = optimizer_class([theta], lr=lr, betas=(beta1, BETA2), eps=0.0)
    theta.grad = torch.ones(1, dtype=torch.float64)
    probe.step()
    probe.state[theta][key].fill_(pinned)
    probe.state[theta]["step"].fill_(STEP)
    step = adaptive_preconditioning(probe, [theta])
    d = float(step.diagonal)
    assert d == pytest.approx(pinned if key == "exp_inf" else math.sqrt(pinned), rel=1e-6)

    def diverges(curvature: float) -> bool:
        return diverges_with_frozen_preconditioner(
            optimizer_class, curvature, pinned, key, scale=scale, lr=lr, betas=(beta1, BETA2)
        )

    assert not diverges(0.99 * step.limit * d)
    assert diverges(1.01 * step.limit * d)


def test_adagrad_preconditioner_from_the_sum_recomputed_from_the_gradients():
    """``D = (1 + t·lr_decay)·(√(s_0 + Σg²) + ε)``: the next step's decayed step size folded in; limit ``2/η``."""
    params, optimizer, grads = optimizer_steps(
        torch.optim.Adagrad, lr_decay=0.05, initial_accumulator_value=0.1
    )
    accumulated = 0.1 + sum(g**2 for g in grads)
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "Adagrad" and step.limit == pytest.approx(2 / 0.01)
    expected = (1 + len(grads) * 0.05) * (accumulated.sqrt() + 1e-10)
    torch.testing.assert_close(step.diagonal, expected, rtol=1e-12, atol=0)


def test_adagrad_limit_separates_stable_from_divergent_with_a_frozen_preconditioner():
    lr, pinned = 0.1, 0.25
    d = math.sqrt(pinned)

    def diverges(curvature: float) -> bool:
        return diverges_with_frozen_preconditioner(
            torch.optim.Adagrad, curvature, pinned, "sum", scale=1e-8, lr=lr
        )

    assert not diverges(0.99 * stability_limit(lr, 0.0) * d)
    assert diverges(1.01 * stability_limit(lr, 0.0) * d)
