"""NAdam's and Adadelta's preconditioners and limits (recomputed from the gradients; against the torch
optimizers with a frozen preconditioner), and no preconditioner for an optimizer that maximizes."""

from __future__ import annotations

import math

import pytest
import torch
from spectral_testing.frozen_preconditioner import (
    BETA2,
    STEP,
    diverges_with_frozen_preconditioner,
    optimizer_steps,
)

from lightning_spectral.functional import adaptive_preconditioning, nadam_stability_limit, stability_limit


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
