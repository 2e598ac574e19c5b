"""Adaptive optimizers' diagonal preconditioners and their stability limits: the adaptive edge of stability.

An adaptive optimizer steps along a preconditioned gradient, ``θ ← θ − η D⁻¹(…)``, so its stability on a
quadratic with Hessian ``H`` is set by the eigenvalues of the *preconditioned Hessian* ``D⁻¹H``, not of ``H``
(Cohen et al. 2022, "Adaptive Gradient Methods at the Edge of Stability"). With ``D`` held fixed:

- **Adam / AdamW** step ``θ ← θ − η m̂_t / (√v̂_t + ε)`` with ``m_t = β₁ m_{t−1} + (1 − β₁) g_t``,
  ``v_t = β₂ v_{t−1} + (1 − β₂) g_t²``, ``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)`` (``amsgrad=True``: the
  running maximum of ``v``). That is ``θ ← θ − η D_t⁻¹ m_t`` with ``D_t = (1 − β₁ᵗ)·diag(√v̂_t + ε)``: heavy-ball
  momentum β₁ with step ``η(1 − β₁)`` on ``D⁻¹H``, stable iff every eigenvalue of ``D⁻¹H`` is below

      (2 + 2β₁) / ((1 − β₁) η)        (38/η for β₁ = 0.9).

- **Adamax** steps ``θ ← θ − η m_t / ((1 − β₁ᵗ) u_t)`` with ``u_t = max(β₂ u_{t−1}, |g_t| + ε)`` (the
  exponentially weighted infinity norm): ``D_t = (1 − β₁ᵗ)·diag(u_t)``, Adam's momentum, Adam's limit.
- **RAdam** steps like Adam with the step size multiplied by the variance rectification
  ``r_t = √((ρ_t − 4)(ρ_t − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_t))`` once ``ρ_t = ρ_∞ − 2tβ₂ᵗ/(1 − β₂ᵗ) > 5``
  (``ρ_∞ = 2/(1 − β₂) − 1``), and with ``ε`` added to ``√v`` before the bias correction:
  ``D_t = (1 − β₁ᵗ)/r_t · diag(√v̂_t + ε/√(1 − β₂ᵗ))``; before that (the first few steps) it is SGD with Adam's
  momentum, ``D_t = (1 − β₁ᵗ)·I``. Adam's limit.
- **Adagrad** steps ``θ ← θ − η_t g_t / (√s_t + ε)`` with ``s_t = s_0 + Σ g²`` and
  ``η_t = η / (1 + (t − 1)·lr_decay)``, no momentum: ``D = (1 + t·lr_decay)·diag(√s_t + ε)`` (the decay of the
  next step folded in), stable below ``2/η``.
- **NAdam** (Dozat's Nesterov-accelerated Adam, torch's form) steps ``θ ← θ − η (c₁ g_t + c₂ m_t) / (√v̂_t + ε)``
  with Adam's moments, ``c₁ = (1 − μ_t)/(1 − Π_t)``, ``c₂ = μ_{t+1}/(1 − Π_t μ_{t+1})``, the momentum schedule
  ``μ_t = β₁(1 − ½·0.96^{tψ})`` (``ψ`` = ``momentum_decay``) and ``Π_t = μ_1⋯μ_t``. With ``D = diag(√v̂ + ε)``,
  along an eigenvector of ``D⁻¹H`` with eigenvalue ``a`` the pair ``(θ, m)`` follows
  ``[[1 − (c₁ + c₂(1 − β₁))ηa, −c₂β₁η], [(1 − β₁)a, β₁]]``, whose determinant is ``β₁(1 − c₁ηa)`` and trace
  ``1 + β₁ − (c₁ + c₂(1 − β₁))ηa``; the Jury conditions leave ``a < 2(1 + β₁) / (η(c₁(1 + β₁) + c₂(1 − β₁)))``,
  with the coefficients of the step just taken. Once ``μ → β₁`` (``tψ`` large) this is
  ``(2 + 2β₁)/((1 − β₁)(1 + 2β₁)η)`` (13.6/η at β₁ = 0.9), Nesterov's limit on Adam's step; before, it moves
  with the schedule.
- **Adadelta** steps ``θ ← θ − η √(u + ε)/√(v_t + ε) · g_t`` with ``v_t = ρ v + (1 − ρ) g_t²`` and ``u`` the running
  average of the squared updates, no momentum: ``D = diag(√(v + ε)/√(u + ε))`` from the stored averages (the
  next step's, up to its own gradient's share of ``v``, as for Adam's ``v̂``), stable below ``2/η``.
- **RMSprop** steps ``θ ← θ − η b_t`` with ``b_t = μ b_{t−1} + g_t / (√v_t + ε)`` (``μ = 0``: no momentum),
  ``v_t = α v_{t−1} + (1 − α) g_t²`` (``centered=True``: ``v − ḡ²`` with ``ḡ`` the running mean of ``g``), no
  bias correction. ``D = diag(√v + ε)``, classical heavy-ball momentum μ with step η on ``D⁻¹H``: stable below
  ``(2 + 2μ)/η`` (``2/η`` without momentum), the limit of
  :func:`~lightning_spectral.functional.hessian.edge_of_stability.stability_limit`.

``maximize=True`` ascends the loss; no preconditioner is returned for it.

Cohen et al. observe that under full-batch training the *preconditioned sharpness* ``λ_1(D⁻¹H)`` rises to the
limit and hovers there, while the preconditioner keeps adapting (λ_max of ``H`` itself keeps rising). Weight
decay: coupled L2 (``weight_decay`` of Adam, Adamax, RAdam, NAdam, RMSprop, Adagrad, Adadelta) adds ``w`` to the
gradient's curvature, so the step sees ``D⁻¹(H + W)`` with ``W = diag(w)`` per parameter group
(:attr:`PreconditionedStep.weight_decay`); decoupled decay (AdamW, ``decoupled_weight_decay=True``) multiplies
the parameters by ``c = 1 − ηw`` before the step, and the same Jury conditions (``1 + T + det`` now
``(1 + c)(1 + β₁) − …``) lower every Adam-family and NAdam limit by the factor ``(1 + c)/2 = 1 − ηw/2``, with the
first param group's ``w`` (``5·10⁻⁵`` at ``η = 10⁻³``, ``w = 0.1``; groups that decay differently shift their own
coordinates' limit by at most ``η·Δw/2``). Param groups with
their own step size ``η_g`` are folded into ``D`` (``η_g D⁻¹ = η_0 (η_0/η_g · D)⁻¹``, ``η_0`` the first group's
step size, the one the limit is stated with; ``+inf`` for a group with ``η_g = 0``, which does not move);
groups whose momentum (β₁, μ) differs have no single limit, and no preconditioner is returned for them (nor,
under NAdam, for parameters whose step counts differ: the limit depends on the step through its momentum
schedule).

Example::

    >>> round(adam_stability_limit(lr=0.01, beta1=0.9), 6)  # 38/η
    3800.0
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> optimizer = torch.optim.Adam([w], lr=0.1)
    >>> adam_preconditioner(optimizer, [w]) is None  # no step taken yet: no moment estimates
    True
    >>> w.grad = torch.tensor([1.0, 2.0, 4.0]); optimizer.step()
    >>> adam_preconditioner(optimizer, [w])  # after one step: (1 − β₁)(|g| + ε)
    tensor([0.1000, 0.2000, 0.4000])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lightning_spectral.functional.hessian.edge_of_stability import stability_limit

__all__ = [
    "PreconditionedStep",
    "adam_preconditioner",
    "adam_stability_limit",
    "adaptive_preconditioning",
    "is_adam",
    "is_rmsprop",
    "nadam_stability_limit",
    "rmsprop_preconditioner",
]

#: ``(state, group) -> the diagonal of D for one parameter`` (``None``: not defined yet).
_Diagonal = Callable[[dict[str, Any], dict[str, Any]], Tensor | None]
#: ``(state, group) -> what the stability limit depends on besides η`` (β₁ for Adam, μ for RMSprop); the
#: parameters must agree on it.
_LimitKey = Callable[[dict[str, Any], dict[str, Any]], Any]


def _is_a(optimizer: object, names: tuple[str, ...]) -> bool:
    return any(cls.__name__ in names for cls in type(optimizer).__mro__)


def is_adam(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.Adam`` or ``AdamW`` (or a subclass): the Adam update above."""
    return _is_a(optimizer, ("Adam", "AdamW"))


def is_rmsprop(optimizer: object) -> bool:
    """Whether ``optimizer`` is ``torch.optim.RMSprop`` (or a subclass)."""
    return _is_a(optimizer, ("RMSprop",))


def adam_stability_limit(lr: float, beta1: float) -> float:
    """``(2 + 2β₁) / ((1 − β₁)·lr)``: Adam's largest stable eigenvalue of ``D⁻¹H`` (module docstring)."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"`lr` must be a positive finite number, got {lr!r}.")
    if not (isinstance(beta1, (int, float)) and 0.0 <= beta1 < 1.0):
        raise ValueError(f"`beta1` must be a number in [0, 1), got {beta1!r}.")
    return (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr)


def _working_dtype(tensor: Tensor) -> torch.dtype:
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def _adam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or float(state["step"]) < 1:
        return None
    step = float(state["step"])
    beta1, beta2 = (float(b) for b in group["betas"])
    second_moment = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    v_hat = second_moment.detach().to(_working_dtype(second_moment)) / (1.0 - beta2**step)
    return (1.0 - beta1**step) * (v_hat.sqrt() + float(group["eps"]))


def _adamax_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_inf" not in state or float(state["step"]) < 1:
        return None
    step, beta1 = float(state["step"]), float(group["betas"][0])
    return (1.0 - beta1**step) * state["exp_inf"].detach().to(_working_dtype(state["exp_inf"]))


def _radam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or float(state["step"]) < 1:
        return None
    step = float(state["step"])
    beta1, beta2 = (float(b) for b in group["betas"])
    second_moment = state["exp_avg_sq"].detach().to(_working_dtype(state["exp_avg_sq"]))
    correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho = rho_inf - 2.0 * step * beta2**step / correction2
    if not rho > 5.0:  # torch's RAdam steps with the momentum alone here
        return torch.full_like(second_moment, 1.0 - beta1**step)
    rectification = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
    v_hat_sqrt = second_moment.sqrt() / math.sqrt(correction2)
    return (1.0 - beta1**step) / rectification * (v_hat_sqrt + float(group["eps"]) / math.sqrt(correction2))


def _nadam_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "exp_avg_sq" not in state or "mu_product" not in state or float(state["step"]) < 1:
        return None
    step, beta2 = float(state["step"]), float(group["betas"][1])
    second_moment = state["exp_avg_sq"].detach().to(_working_dtype(state["exp_avg_sq"]))
    return (second_moment / (1.0 - beta2**step)).sqrt() + float(group["eps"])


def _nadam_schedule(state: dict[str, Any], group: dict[str, Any]) -> tuple[float, ...]:
    """What NAdam's limit depends on besides ``η``: ``β₁``, ``momentum_decay``, the step and ``Π_t``."""
    return (
        float(group["betas"][0]),
        float(group["momentum_decay"]),
        float(state["step"]),
        float(state["mu_product"]),
    )


def nadam_stability_limit(
    lr: float, beta1: float, momentum_decay: float, step: float, mu_product: float
) -> float:
    """NAdam's largest stable eigenvalue of ``D⁻¹H`` after ``step`` steps, ``mu_product`` = ``Π_t`` (module
    docstring): ``2(1 + β₁) / (η(c₁(1 + β₁) + c₂(1 − β₁)))``."""
    adam_stability_limit(lr, beta1)  # validates lr and β₁
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1.0) * momentum_decay))
    c1 = (1.0 - mu) / (1.0 - mu_product)
    c2 = mu_next / (1.0 - mu_product * mu_next)
    return 2.0 * (1.0 + beta1) / (lr * (c1 * (1.0 + beta1) + c2 * (1.0 - beta1)))


def _adadelta_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "square_avg" not in state or float(state["step"]) < 1:
        return None
    eps = float(group["eps"])
    square_avg = state["square_avg"].detach().to(_working_dtype(state["square_avg"]))
    acc_delta = state["acc_delta"].detach().to(square_avg.dtype)
    return (square_avg + eps).sqrt() / (acc_delta + eps).sqrt()


def _adagrad_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "sum" not in state or float(state["step"]) < 1:
        return None
    decay = 1.0 + float(state["step"]) * float(group.get("lr_decay", 0.0))  # the next step's η_t = η / decay
    accumulated = state["sum"].detach().to(_working_dtype(state["sum"]))
    return decay * (accumulated.sqrt() + float(group["eps"]))


def _rmsprop_diagonal(state: dict[str, Any], group: dict[str, Any]) -> Tensor | None:
    if "square_avg" not in state or float(state["step"]) < 1:
        return None
    square_avg = state["square_avg"].detach().to(_working_dtype(state["square_avg"]))
    if group.get("centered"):
        grad_avg = state["grad_avg"].detach().to(square_avg.dtype)
        square_avg = square_avg - grad_avg * grad_avg
    return square_avg.sqrt() + float(group["eps"])


def _adam_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return float(group["betas"][0])


def _no_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return 0.0


def _rmsprop_momentum(state: dict[str, Any], group: dict[str, Any]) -> float:
    return float(group.get("momentum", 0.0))


class _Found(NamedTuple):
    diagonal: Tensor
    limit_key: Any
    weight_decay: Tensor | None


def _preconditioner(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor], diagonal: _Diagonal, limit_key: _LimitKey
) -> _Found | None:
    """``D`` over ``parameters`` (flattened, concatenated in their order) from each parameter's state and group,
    with the groups' step sizes folded in, the ``limit_key`` they share, and each coordinate's coupled
    ``weight_decay`` (``None`` if 0 everywhere; groups with ``decoupled_weight_decay`` count 0, their decay is
    in the limit); ``None`` if a piece is undefined, a group maximizes, or the parameters' ``limit_key``
    (momentum, schedule) differ."""
    groups = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    reference_lr = float(optimizer.param_groups[0]["lr"])
    pieces, decays, keys = [], [], set()
    for parameter in parameters:
        state, group = optimizer.state.get(parameter), groups.get(id(parameter))
        if not state or group is None or group.get("maximize"):
            return None
        piece = diagonal(state, group)
        if piece is None:
            return None
        keys.add(limit_key(state, group))
        lr = float(group["lr"])
        if lr != reference_lr:
            piece = piece * (reference_lr / lr) if lr > 0 else torch.full_like(piece, math.inf)
        pieces.append(piece.reshape(-1))
        coupled = 0.0 if group.get("decoupled_weight_decay") else float(group.get("weight_decay", 0.0))
        decays.append(torch.full_like(pieces[-1], coupled))
    if not pieces or len(keys) > 1:
        return None
    weight_decay = torch.cat(decays)
    return _Found(torch.cat(pieces), keys.pop(), weight_decay if bool((weight_decay != 0).any()) else None)


def adam_preconditioner(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> Tensor | None:
    """The diagonal of Adam's ``D_t = (1 − β₁ᵗ)·diag(√v̂_t + ε)`` over ``parameters``, flattened and concatenated
    in their order, as float32 (float64 parameters: float64) on the parameters' device; param groups' step
    sizes folded in (module docstring).

    ``None`` when it is not defined: ``optimizer`` is not Adam/AdamW (see :func:`is_adam`), a parameter has no
    moment estimates yet (no step taken, or not in the optimizer), or the parameters' groups have different
    ``β₁``.
    """
    if not is_adam(optimizer):
        return None
    found = _preconditioner(optimizer, parameters, _adam_diagonal, _adam_momentum)
    return None if found is None else found.diagonal


def rmsprop_preconditioner(optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]) -> Tensor | None:
    """The diagonal of RMSprop's ``D = diag(√v + ε)`` (``centered=True``: ``√(v − ḡ²) + ε``) over
    ``parameters``, like :func:`adam_preconditioner`; ``None`` for other optimizers, before the first step, or
    for groups with different ``momentum``."""
    if not is_rmsprop(optimizer):
        return None
    found = _preconditioner(optimizer, parameters, _rmsprop_diagonal, _rmsprop_momentum)
    return None if found is None else found.diagonal


@dataclass(frozen=True)
class PreconditionedStep:
    """An adaptive optimizer's diagonal preconditioner ``D`` (over some parameters), its coupled weight decay
    ``w`` per coordinate (``None`` without; the step sees ``D⁻¹(H + diag(w))``) and the stability limit of that
    matrix's eigenvalues at the current step size (decoupled decay folded in)."""

    optimizer: str
    diagonal: Tensor
    limit: float
    weight_decay: Tensor | None = None


def _decoupled_factor(group: dict[str, Any]) -> float:
    """``(1 + c)/2 = 1 − ηw/2``: what decoupled decay (``c = 1 − ηw``) does to an Adam-family or NAdam limit
    (1 for groups without it: RMSprop, Adagrad and Adadelta have none)."""
    if not group.get("decoupled_weight_decay"):
        return 1.0
    return 1.0 - float(group["lr"]) * float(group.get("weight_decay", 0.0)) / 2.0


@dataclass(frozen=True)
class _Rule:
    """How one optimizer is read: the classes it covers, its ``D``, what its limit depends on, and the limit
    ``(η, limit_key) -> λ`` before decoupled decay."""

    classes: tuple[str, ...]
    diagonal: _Diagonal
    limit_key: _LimitKey
    limit: Callable[[float, Any], float]


#: Name -> rule, in the order the optimizer's classes are matched (AdamW is an Adam).
_RULES: dict[str, _Rule] = {
    "Adam": _Rule(("Adam", "AdamW"), _adam_diagonal, _adam_momentum, adam_stability_limit),
    "Adamax": _Rule(("Adamax",), _adamax_diagonal, _adam_momentum, adam_stability_limit),
    "RAdam": _Rule(("RAdam",), _radam_diagonal, _adam_momentum, adam_stability_limit),
    "NAdam": _Rule(
        ("NAdam",), _nadam_diagonal, _nadam_schedule, lambda lr, key: nadam_stability_limit(lr, *key)
    ),
    "RMSprop": _Rule(("RMSprop",), _rmsprop_diagonal, _rmsprop_momentum, stability_limit),
    "Adagrad": _Rule(("Adagrad",), _adagrad_diagonal, _no_momentum, stability_limit),
    "Adadelta": _Rule(("Adadelta",), _adadelta_diagonal, _no_momentum, stability_limit),
}


def has_preconditioner_rule(optimizer: object) -> bool:
    """Whether :func:`adaptive_preconditioning` knows ``optimizer``'s class (Adam family, RMSprop, Adagrad, ...)."""
    return any(_is_a(optimizer, rule.classes) for rule in _RULES.values())


def adaptive_preconditioning(
    optimizer: torch.optim.Optimizer, parameters: Sequence[Tensor]
) -> PreconditionedStep | None:
    """``D``, the coupled weight decay and the limit of ``λ_1(D⁻¹(H + W))`` for Adam / AdamW / Adamax / RAdam
    (``(2 + 2β₁)/((1 − β₁)η)``), NAdam (its schedule's limit), both times ``1 − ηw/2`` under decoupled decay,
    RMSprop (``(2 + 2μ)/η``), Adagrad and Adadelta (``2/η``), ``η`` from the first param group (module
    docstring); ``None`` for other optimizers or where the preconditioner is not defined (see
    :func:`adam_preconditioner`)."""
    name = next((name for name, rule in _RULES.items() if _is_a(optimizer, rule.classes)), None)
    if name is None:
        return None
    rule = _RULES[name]
    found = _preconditioner(optimizer, parameters, rule.diagonal, rule.limit_key)
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    if found is None or not lr > 0:
        return None
    limit = rule.limit(lr, found.limit_key) * _decoupled_factor(group)
    return PreconditionedStep(name, found.diagonal, limit, found.weight_decay)
