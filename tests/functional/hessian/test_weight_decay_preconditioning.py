"""Weight decay in the adaptive edge of stability: coupled decay adds ``w`` to the curvature the step sees
(``D⁻¹(H + W)``), decoupled decay lowers the limit by ``1 − ηw/2``; both against the torch optimizers with a
frozen preconditioner on a 1-D quadratic, and the shifted eigenvalues against the dense matrix."""

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
    adam_stability_limit,
    adaptive_preconditioning,
    hessian_eigenvalues,
    nadam_stability_limit,
    stability_limit,
)

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


def squared_error(net, batch):
    return ((net(batch[0]) - batch[1]) ** 2).mean()


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
