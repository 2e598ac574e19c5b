"""The preconditioners of Adam, RMSprop, Adamax, RAdam and Adagrad against their states recomputed from the
gradients, their stability limits against the torch optimizers themselves (with the second moment frozen), and
the preconditioned Hessian eigenvalues against the dense ``D⁻¹H`` (NAdam and Adadelta below).

NAdam's and Adadelta's preconditioners and limits (recomputed from the gradients; against the torch
optimizers with a frozen preconditioner), and no preconditioner for an optimizer that maximizes.

Weight decay in the adaptive edge of stability: coupled decay adds ``w`` to the curvature the step sees
(``D⁻¹(H + W)``), decoupled decay lowers the limit by ``1 − ηw/2``; both against the torch optimizers with a
frozen preconditioner on a 1-D quadratic, and the shifted eigenvalues against the dense matrix.
"""

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
from spectral_testing.problems import squared_error
from spectral_testing.references import dense_hessian
from torch import nn

from lightning_spectral.functional import (
    adam_preconditioner,
    adam_stability_limit,
    adaptive_preconditioning,
    hessian_eigenvalues,
    nadam_stability_limit,
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


# --------------------------------------------------------------------------------------- NAdam and Adadelta
def _nadam_coefficients(beta1: float, momentum_decay: float, steps: int) -> tuple[float, float, float]:
    """``μ_t``, ``μ_{t+1}`` and ``Π_t`` after ``steps`` steps, multiplied out step by step."""
    mus = [beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay)) for t in range(1, steps + 2)]
    return mus[steps - 1], mus[steps], math.prod(mus[:steps])


@pytest.mark.parametrize("kwargs", [{}, {"betas": (0.5, 0.99), "momentum_decay": 0.1, "eps": 1e-4}])
def test_nadam_preconditioner_and_limit_from_the_states_recomputed_from_the_gradients(kwargs):
    """``D = √v̂ + ε``; the limit ``2(1 + β₁)/(η(c₁(1 + β₁) + c₂(1 − β₁)))`` with the last step's
    ``c₁ = (1 − μ_t)/(1 − Π_t)``, ``c₂ = μ_{t+1}/(1 − Π_t μ_{t+1})``."""
    params, optimizer, grads = optimizer_steps(torch.optim.NAdam, **kwargs)
    beta1, beta2 = kwargs.get("betas", (0.9, 0.999))
    v = torch.zeros_like(grads[0])
    for g in grads:
        v = beta2 * v + (1 - beta2) * g**2
    t = len(grads)
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "NAdam"
    expected = (v / (1 - beta2**t)).sqrt() + kwargs.get("eps", 1e-8)
    torch.testing.assert_close(step.diagonal, expected, rtol=1e-12, atol=0)
    mu, mu_next, product = _nadam_coefficients(beta1, kwargs.get("momentum_decay", 4e-3), t)
    c1, c2 = (1 - mu) / (1 - product), mu_next / (1 - product * mu_next)
    assert step.limit == pytest.approx(
        2 * (1 + beta1) / (0.01 * (c1 * (1 + beta1) + c2 * (1 - beta1))), rel=1e-6
    )  # torch keeps Π_t in float32


@pytest.mark.parametrize(
    "beta1, momentum_decay, limit_times_lr",
    [
        (0.9, 4e-3, 3.8 / (0.1 * 2.8)),  # μ = β₁ after 10¹⁷ steps: Nesterov's limit on Adam's step
        (0.9, 0.0, None),  # μ = β₁/2 throughout
        (0.0, 4e-3, 2.0),  # no momentum: 2/η
    ],
)
def test_nadam_limit_separates_stable_from_divergent_with_a_frozen_preconditioner(
    beta1, momentum_decay, limit_times_lr
):
    lr, pinned = 0.1, 0.25
    limit = nadam_stability_limit(lr, beta1, momentum_decay, STEP, 0.0)
    if limit_times_lr is not None:
        assert limit * lr == pytest.approx(limit_times_lr, rel=1e-12)
    d = math.sqrt(pinned)

    def diverges(curvature: float) -> bool:
        return diverges_with_frozen_preconditioner(
            torch.optim.NAdam,
            curvature,
            pinned,
            "exp_avg_sq",
            lr=lr,
            betas=(beta1, BETA2),
            momentum_decay=momentum_decay,
        )

    assert not diverges(0.99 * limit * d)
    assert diverges(1.01 * limit * d)


def test_adadelta_preconditioner_from_the_averages_and_its_limit_against_torchs_adadelta():
    """``D = √(v + ε)/√(u + ε)`` from the squared-gradient and squared-update averages, limit ``2/η``; with both
    averages pinned, ``torch.optim.Adadelta`` is stable just below it and diverges just above."""
    params, optimizer, grads = optimizer_steps(torch.optim.Adadelta, rho=0.8, eps=1e-4)
    v, u = torch.zeros_like(grads[0]), torch.zeros_like(grads[0])
    for g in grads:
        v = 0.8 * v + 0.2 * g**2
        delta = (u + 1e-4).sqrt() / (v + 1e-4).sqrt() * g
        u = 0.8 * u + 0.2 * delta**2
    step = adaptive_preconditioning(optimizer, params)
    assert step.optimizer == "Adadelta" and step.limit == pytest.approx(2 / 0.01)
    torch.testing.assert_close(step.diagonal, (v + 1e-4).sqrt() / (u + 1e-4).sqrt(), rtol=1e-10, atol=0)

    lr, square_avg, acc_delta = 0.5, 0.25, 0.04
    d = math.sqrt(square_avg / acc_delta)

    def diverges(curvature: float) -> bool:
        return diverges_with_frozen_preconditioner(
            torch.optim.Adadelta,
            curvature,
            square_avg,
            "square_avg",
            pins={"acc_delta": acc_delta},
            lr=lr,
            rho=BETA2,
        )

    assert not diverges(0.99 * stability_limit(lr) * d)
    assert diverges(1.01 * stability_limit(lr) * d)


@pytest.mark.parametrize(
    "optimizer_class", [torch.optim.Adam, torch.optim.NAdam, torch.optim.RMSprop, torch.optim.Adadelta]
)
def test_no_preconditioner_when_the_optimizer_maximizes(optimizer_class):
    params, optimizer, _ = optimizer_steps(optimizer_class, maximize=True)
    assert adaptive_preconditioning(optimizer, params) is None


# --------------------------------------------------------------------------------------------- weight decay
LR, PINNED, DECAY = 0.1, 0.25, 2.0  # ηw = 0.2: decoupled decay moves the limit by 10 %


def pinned_step(optimizer_class, key, **kwargs):
    """``adaptive_preconditioning`` of ``optimizer_class`` on one parameter with the state of the frozen runs
    (``key`` pinned at ``PINNED``, ``STEP`` steps, NAdam's ``Π_t`` = 0)."""
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = optimizer_class([theta], eps=0.0, **kwargs)
    theta.grad = torch.ones(1, dtype=torch.float64)
    optimizer.step()
    state = optimizer.state[theta]
    state[key].fill_(PINNED)
    state["step"].fill_(STEP)
    if "mu_product" in state:
        state["mu_product"].zero_()
    return adaptive_preconditioning(optimizer, [theta])


def test_shifted_eigenvalues_are_those_of_the_dense_matrix():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    batch = (torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 1, dtype=torch.float64))
    H = dense_hessian(model, squared_error, batch)
    dim = H.shape[0]
    w = torch.rand(dim, dtype=torch.float64)
    d = torch.rand(dim, dtype=torch.float64) + 0.1
    d[:3] = math.inf  # coordinates that do not move drop out, their decay too
    exact = torch.linalg.eigvals(torch.diag(1 / d) @ (H + torch.diag(w))).real.max()
    result = hessian_eigenvalues(model, squared_error, batch, tol=1e-10, preconditioner=d, weight_decay=w)
    torch.testing.assert_close(result.eigenvalues[0], exact, rtol=1e-8, atol=0)
    plain = hessian_eigenvalues(model, squared_error, batch, k=2, tol=1e-10, weight_decay=0.5)
    torch.testing.assert_close(
        plain.eigenvalues, torch.linalg.eigvalsh(H).flip(0)[:2] + 0.5, rtol=1e-8, atol=0
    )
    for bad in (-1.0, torch.ones(dim + 1), torch.full((dim,), math.nan), "0.1"):
        with pytest.raises(ValueError, match="weight_decay"):
            hessian_eigenvalues(model, squared_error, batch, weight_decay=bad)


def test_coupled_decay_per_group_and_decoupled_decay_in_the_limit():
    problem = TwoLayerProblem()
    model, first, second, stepped = problem.model, problem.first, problem.second, problem.stepped
    adam = stepped(torch.optim.Adam([{"params": first, "weight_decay": 0.3}, {"params": second}], lr=0.01))
    step = adaptive_preconditioning(adam, first + second)
    n = sum(p.numel() for p in first)
    assert bool((step.weight_decay[:n] == 0.3).all()) and bool((step.weight_decay[n:] == 0).all())
    assert step.limit == pytest.approx(adam_stability_limit(0.01, 0.9), rel=1e-12)
    adamw = stepped(torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.3))
    step = adaptive_preconditioning(adamw, list(model.parameters()))
    assert step.weight_decay is None
    assert step.limit == pytest.approx(adam_stability_limit(0.01, 0.9) * (1 - 0.01 * 0.3 / 2), rel=1e-12)
    _, plain, _ = optimizer_steps(torch.optim.Adam)
    assert (
        adaptive_preconditioning(plain, [p for g in plain.param_groups for p in g["params"]]).weight_decay
        is None
    )


@pytest.mark.parametrize(
    "optimizer_class, key, scale, kwargs, limit",
    [
        (torch.optim.Adam, "exp_avg_sq", 1.0, {"betas": (0.9, BETA2)}, adam_stability_limit(LR, 0.9)),
        (torch.optim.Adamax, "exp_inf", 1e-8, {"betas": (0.9, BETA2)}, adam_stability_limit(LR, 0.9)),
        (torch.optim.RMSprop, "square_avg", 1.0, {"alpha": BETA2, "momentum": 0.5}, stability_limit(LR, 0.5)),
        (torch.optim.Adagrad, "sum", 1e-8, {}, stability_limit(LR)),
    ],
    ids=["adam", "adamax", "rmsprop", "adagrad"],
)
def test_coupled_decay_adds_to_the_curvature_the_step_sees(optimizer_class, key, scale, kwargs, limit):
    """On ``½aθ²`` with ``weight_decay=w`` the step sees ``(a + w)/D``: stable just below the limit, not above;
    ``adaptive_preconditioning`` reports that ``D``, ``w`` and limit."""
    d = PINNED if key == "exp_inf" else math.sqrt(PINNED)
    step = pinned_step(optimizer_class, key, lr=LR, weight_decay=DECAY, **kwargs)
    assert float(step.diagonal) == pytest.approx(d, rel=1e-6) and float(step.weight_decay) == DECAY
    assert step.limit == pytest.approx(limit, rel=1e-12)

    def diverges(preconditioned: float) -> bool:
        curvature = preconditioned * d - DECAY
        return diverges_with_frozen_preconditioner(
            optimizer_class, curvature, PINNED, key, scale=scale, lr=LR, weight_decay=DECAY, **kwargs
        )

    assert not diverges(0.99 * limit)
    assert diverges(1.01 * limit)


@pytest.mark.parametrize(
    "optimizer_class, kwargs, undecayed_limit",
    [
        (torch.optim.AdamW, {"betas": (0.9, BETA2)}, adam_stability_limit(LR, 0.9)),
        (
            torch.optim.RAdam,
            {"betas": (0.9, BETA2), "decoupled_weight_decay": True},
            adam_stability_limit(LR, 0.9),
        ),
        (
            torch.optim.NAdam,
            {"betas": (0.9, BETA2), "decoupled_weight_decay": True},
            nadam_stability_limit(LR, 0.9, 4e-3, STEP, 0.0),
        ),
    ],
    ids=["adamw", "radam", "nadam"],
)
def test_decoupled_decay_lowers_the_limit_by_one_minus_half_eta_w(optimizer_class, kwargs, undecayed_limit):
    limit = undecayed_limit * (1 - LR * DECAY / 2)
    d = math.sqrt(PINNED)
    step = pinned_step(optimizer_class, "exp_avg_sq", lr=LR, weight_decay=DECAY, **kwargs)
    assert step.weight_decay is None and float(step.diagonal) == pytest.approx(d, rel=1e-6)
    assert step.limit == pytest.approx(limit, rel=1e-6)

    def diverges(preconditioned: float) -> bool:
        return diverges_with_frozen_preconditioner(
            optimizer_class, preconditioned * d, PINNED, "exp_avg_sq", lr=LR, weight_decay=DECAY, **kwargs
        )

    assert not diverges(0.99 * limit)
    assert diverges(1.01 * limit)
    assert diverges(0.99 * undecayed_limit)  # the undecayed limit would call this run stable
