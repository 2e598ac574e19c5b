"""Adaptive optimizers stepped on a tiny model (their states, to recompute the preconditioner from), and run on a
1-D quadratic with their preconditioner frozen (to check a stability limit against the optimizer itself)."""

from __future__ import annotations

import torch
from torch import nn

#: β₂ (or α, ρ) so close to 1 that a step's own gradient barely moves the pinned average, and a step count
#: where β₂ᵗ = e⁻¹⁰⁰: the bias corrections are 1.
BETA2, STEP = 1 - 1e-15, 1e17


def optimizer_steps(optimizer_class, steps=5, **kwargs):
    """A few steps of ``optimizer_class`` on a tiny float64 model; returns the parameters, the optimizer and the
    gradients it took."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    optimizer = optimizer_class(model.parameters(), lr=0.01, **kwargs)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone())
        optimizer.step()
    return list(model.parameters()), optimizer, grads


class TwoLayerProblem:
    """The tiny float64 model of :func:`optimizer_steps` on its fixed batch, split into its two layers'
    parameters (for param groups); :meth:`stepped` takes three steps of an optimizer built over them."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
        self.first, self.second = list(self.model[0].parameters()), list(self.model[2].parameters())
        self.batch = (torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64))

    def stepped(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        x, y = self.batch
        for _ in range(3):
            optimizer.zero_grad()
            ((self.model(x) - y) ** 2).mean().backward()
            optimizer.step()
        return optimizer


def diverges_with_frozen_preconditioner(
    optimizer_class,
    curvature: float,
    second_moment: float,
    key: str,
    steps: int = 5000,
    scale: float = 1.0,
    pins: dict[str, float] | None = None,
    **kwargs,
) -> bool:
    """``optimizer_class`` on ``½·a·θ²`` with its second-moment state ``key`` pinned at ``second_moment`` (a
    frozen preconditioner): with β₂ / α = 1 − 10⁻¹⁵ a step's own gradient moves it by ``10⁻¹⁵·a²θ²/v`` < 10⁻⁴
    relative while ``|θ| ≤ 10⁴``, and it is reset after every step; the first moment / momentum buffer start at
    zero. The threshold 10⁴ is far above the transient growth of a stable run (≈ 7 at momentum 0.9 and 0.99 of
    the limit). ``scale`` shrinks the start (and the threshold) for Adamax, whose ``max(β₂u, |g|)`` stays at the
    pinned ``u`` only while the gradients are smaller than it (the problem is linear: only growth matters).
    ``pins``: more state entries held at a value (Adadelta's ``acc_delta``). NAdam's ``Π_t`` is set to its
    value after ``STEP`` steps, 0."""
    pins = {key: second_moment, **(pins or {})}
    theta = nn.Parameter(torch.ones(1, dtype=torch.float64))
    optimizer = optimizer_class([theta], eps=0.0, **kwargs)
    theta.grad = torch.ones(1, dtype=torch.float64)
    optimizer.step()
    state = optimizer.state[theta]
    for name in ("exp_avg", "momentum_buffer", "mu_product"):
        if name in state:
            state[name].zero_()
    state["step"].fill_(STEP)
    with torch.no_grad():
        theta.fill_(scale)
    for _ in range(steps):
        for name, value in pins.items():  # undo the step's own 10⁻¹⁵·g² update
            state[name].fill_(value)
        optimizer.zero_grad()
        (0.5 * curvature * theta**2).sum().backward()
        optimizer.step()
        if not theta.abs().item() <= 1e4 * scale:
            return True
    return False
